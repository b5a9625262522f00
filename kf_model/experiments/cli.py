"""``python train/experiments.py {disentanglement,sweep,transfer,init_ckn,report}``: one JSON file an
experiment, assembled from resumable runs (``--scale``), or the one-shot ``--quick`` smoke test."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch

from kf_model.errors import KFError
from kf_model.experiments.claims import EXPERIMENTS, SWEEP_BETAS, run_resumable, sweep_filter
from kf_model.experiments.full_reports import full_scale_tables
from kf_model.experiments.keep import keep, restore
from kf_model.experiments.probe import probe, reproject
from kf_model.experiments.reading import claims_reading, with_reading
from kf_model.experiments.reports import report, with_full_scale_tables
from kf_model.experiments.representations import disentanglement
from kf_model.experiments.runs import git_commit
from kf_model.experiments.stages import SETTINGS, Scale
from kf_model.experiments.sweep import Grid, check_grid, sweep
from kf_model.experiments.transfer import transfer
from kf_model.utils import writable_folder

KEPT_DEFAULT = "experiments/full"  # committed: a session's machine is fresh, its finished runs are not lost

# ============================================================================= command line

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Transfer and disentanglement experiments of kf.")
    parser.add_argument("experiment", choices=(*EXPERIMENTS, "probe", "report", "keep", "restore"),
                        help="sweep: beta x InfoMin variant (and width, --quick) on a validation split; init_ckn: "
                             "the recipe's factorization with and without --init-ckn-from-teacher, on the validation "
                             "carve-out; probe: seconds per step of every kind of run and the projected cost of "
                             "the full scale; report: the README tables (stdout, and <output>/experiments.md) "
                             "+ figures; keep / restore: copy the finished runs of --output to / from --kept (a "
                             "committed folder), so that the next session's machine continues them")
    parser.add_argument("--dataset", choices=sorted(SETTINGS), default="dsprites", help="transfer and init_ckn only")
    parser.add_argument("--widths", type=int, nargs="+", help="sweep --quick: last TSN widths (default: 2 16)")
    parser.add_argument("--betas", type=float, nargs="+", help="sweep: InfoMin weights (default: all of the scale's)")
    parser.add_argument("--infomins", nargs="+", choices=("batch", "vib"), help="sweep: variants (default: both)")
    parser.add_argument("--scale", choices=("quick", "full"),
                        help="resumable runs at this scale (default without --quick: full, the recipes' sizes): one "
                             "result file a run; the same command again skips finished runs and resumes an "
                             "interrupted training; the JSON is assembled from the finished runs")
    parser.add_argument("--assemble-only", action="store_true",
                        help="only rewrite the JSON from the finished runs (probe: reprice the plan with the recorded "
                             "timings)")
    parser.add_argument("--quick", action="store_true",
                        help="without --scale: the one-shot smoke test of the commands (small networks, minutes)")
    parser.add_argument("--output", default="runs/experiments", help="folder of the JSON results and networks")
    parser.add_argument("--kept", default=KEPT_DEFAULT,
                        help="keep / restore: the committed folder of finished runs (default: %(default)s)")
    parser.add_argument("--readme", help="report: also rewrite the full-scale block and the claims' reading of this "
                             "README from the JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = shlex.join(["python", "train/experiments.py", *(sys.argv[1:] if argv is None else argv)])
    if args.experiment in ("keep", "restore"):
        return keep_or_restore(args)
    if args.experiment == "report":
        try:
            return write_report(args)
        except KFError as error:
            raise SystemExit(f"error: {error}") from error
    try:
        check_args(args)
        torch.set_num_threads(1)
        if args.experiment == "probe":
            measure = reproject if args.assemble_only else probe  # --assemble-only: price with the recorded timings
            print(f"wrote {measure(Path(args.output), command)}")
            return 0
        if args.scale or not args.quick or args.experiment == "init_ckn":
            return resumable(args, command)
        return one_shot(args, command)
    except KFError as error:
        raise SystemExit(f"error: {error}") from error


def write_report(args: argparse.Namespace) -> int:
    """``report``: the README tables of the JSON results in --output (and --readme rewritten from them)."""
    output = Path(args.output)
    if not output.is_dir() or not any(output.glob("*.json")):
        raise KFError(f"--output {output}: no experiment results there (no JSON files); pass the folder an "
                      "experiment wrote, e.g. docs/experiments")
    writable_folder(output, "--output")
    readme = Path(args.readme) if args.readme else None
    if readme is not None and not readme.is_file():
        raise KFError(f"--readme {readme}: {'a folder' if readme.is_dir() else 'no such file'}; pass the README "
                      "to rewrite")
    text = report(output)
    (output / "experiments.md").write_text(text)
    print(text)
    if readme is not None:
        text = with_full_scale_tables(readme.read_text(), full_scale_tables(output))
        readme.write_text(with_reading(text, claims_reading(output)))
    return 0


def check_args(args: argparse.Namespace) -> None:
    """What the runs would refuse only after hours, or not at all, refused first: an --output that cannot be a
    folder, a probe to reprice that was never run, a --betas of a resumable sweep that selects no run."""
    output = writable_folder(args.output, "--output")
    if args.experiment == "probe" and args.assemble_only and not (output / "cost-probe-full.json").is_file():
        raise KFError(f"--output {output}: no cost-probe-full.json to reprice; run the probe there first "
                      "(without --assemble-only)")
    resumable = args.scale or not args.quick or args.experiment == "init_ckn"
    if args.experiment == "sweep" and args.betas:
        check_grid([], args.betas, [])  # the --quick check: finite and >= 0
        unknown = [b for b in args.betas if b not in SWEEP_BETAS]
        if resumable and unknown:
            raise KFError(f"--betas {', '.join(map(str, unknown))}: not swept at --scale; choose among "
                          f"{', '.join(map(str, SWEEP_BETAS))}")


def keep_or_restore(args: argparse.Namespace) -> int:
    try:
        if args.experiment == "keep":
            kept = keep(Path(args.output), Path(args.kept))
            print(f"kept {kept['files']} files ({kept['bytes'] / 1e6:.1f} MB) of {args.output} in {args.kept}")
        else:
            print(f"restored {restore(Path(args.kept), Path(args.output))} files of {args.kept} into {args.output}")
    except KFError as error:
        raise SystemExit(f"error: {error}") from error
    return 0


def resumable(args: argparse.Namespace, command: str) -> int:
    """``--scale``: kf_model.experiments.claims' runs, each recorded as it finishes."""
    scale = Scale.quick() if (args.scale or ("quick" if args.quick else "full")) == "quick" else Scale.full()
    if args.widths:
        raise KFError("--widths is a --quick sweep option; at --scale the TSN widths are the recipe's")
    select = sweep_filter(args.betas, args.infomins) if args.experiment == "sweep" else None
    if args.assemble_only:  # the JSON names the command that runs the experiment, not this one
        command = shlex.join(word for word in shlex.split(command) if word != "--assemble-only")
    path = run_resumable(args.experiment, scale, Path(args.output), command, dataset=args.dataset,
                         assemble_only=args.assemble_only, select=select)
    results = json.loads(path.read_text())
    state = "complete" if results["complete"] else f"{len(results['missing_runs'])} run(s) still missing"
    print(f"wrote {path} ({results['finished_runs']} of {results['planned_runs']} runs finished, {state})")
    return 0


def one_shot(args: argparse.Namespace, command: str) -> int:
    """``--quick`` without ``--scale``: the recorded smoke test of the commands, one JSON file written at the end."""
    scale = Scale.quick()
    output = Path(args.output)
    work = output / scale.name / ("dsprites" if args.experiment == "disentanglement" else args.dataset)
    if args.experiment == "sweep":
        work = output / scale.name / "sweep-dsprites"
    work.mkdir(parents=True, exist_ok=True)
    if args.experiment == "sweep":
        default = Grid.quick()
        grid = check_grid(args.widths or list(default.widths), args.betas or list(default.betas),
                          args.infomins or list(default.infomins))
        results = sweep(scale, grid, work)
        path = output / f"sweep-dsprites-{scale.name}.json"
    elif args.experiment == "transfer":
        results = transfer(SETTINGS[args.dataset], scale, work)
        path = output / f"transfer-{args.dataset}-{scale.name}.json"
    else:
        results = disentanglement(scale, work)
        path = output / f"disentanglement-dsprites-{scale.name}.json"
    results["command"], results["commit"] = command, git_commit()
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path}")
    return 0
