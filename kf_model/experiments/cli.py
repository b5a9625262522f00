"""``python train/experiments.py {transfer,disentanglement,sweep,report}``: one JSON file a run."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch

from kf_model.errors import KFError
from kf_model.experiments.reports import report
from kf_model.experiments.representations import disentanglement
from kf_model.experiments.stages import SETTINGS, Scale
from kf_model.experiments.sweep import Grid, check_grid, sweep
from kf_model.experiments.transfer import transfer

# ============================================================================= command line

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Transfer and disentanglement experiments of kf.")
    parser.add_argument("experiment", choices=("transfer", "disentanglement", "sweep", "report"),
                        help="sweep: width x beta x InfoMin variant on a validation split (experiments.sweep); "
                             "report: the README tables (stdout, and <output>/experiments.md) + figures")
    parser.add_argument("--dataset", choices=sorted(SETTINGS), default="dsprites", help="transfer only")
    parser.add_argument("--widths", type=int, nargs="+", help="sweep: last TSN widths (default: 2 16)")
    parser.add_argument("--betas", type=float, nargs="+", help="sweep: InfoMin weights (default: 0 0.001 1)")
    parser.add_argument("--infomins", nargs="+", choices=("batch", "vib"), help="sweep: variants (default: both)")
    parser.add_argument("--quick", action="store_true", help="small networks and budgets (a shared CPU)")
    parser.add_argument("--output", default="runs/experiments", help="folder of the JSON results and networks")
    args = parser.parse_args(argv)
    if args.experiment == "report":
        text = report(Path(args.output))
        (Path(args.output) / "experiments.md").write_text(text)
        print(text)
        return 0
    torch.set_num_threads(1)
    scale = Scale.quick() if args.quick else Scale.full()
    output = Path(args.output)
    work = output / scale.name / ("dsprites" if args.experiment == "disentanglement" else args.dataset)
    if args.experiment == "sweep":
        work = output / scale.name / "sweep-dsprites"
    work.mkdir(parents=True, exist_ok=True)
    try:
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
    except KFError as error:
        raise SystemExit(f"error: {error}") from error
    results["command"] = shlex.join(["python", "train/experiments.py", *(sys.argv[1:] if argv is None else argv)])
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path}")
    return 0
