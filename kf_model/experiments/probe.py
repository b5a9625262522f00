"""What the full-scale experiments cost on this machine: each kind of training run is timed for a few steps
(seconds per step, as ``fit`` records them), then every planned run is priced at its full step count. Scoring
runs are priced from the score runs that finished (their recorded seconds), when there are any.

    python train/experiments.py probe --output docs/experiments     # writes cost-probe-full.json
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

from kf_model.experiments.claims import (
    disentanglement_runs,
    fraction_of,
    init_ckn_runs,
    pool_size,
    sweep_runs,
    transfer_runs,
    transfer_stages,
)
from kf_model.experiments.plans import KD_STUDENT, TEACHER, VAL_SIZE, factorization, stage_argv, stage_folder
from kf_model.experiments.runs import git_commit
from kf_model.experiments.stages import SETTINGS, Scale, SubsetFactorizeJob, SubsetTeacherJob, transfer_steps
from kf_model.experiments.transfer_job import TRANSFER_METHODS, WIDE, TransferRun, train_transfer_run
from kf_model.training import DistillJob, read_summary, run

PROBE_STEPS = 30
CONFIG_STEPS = {"dsprites": {"teacher": 2000, "factorize": 2000, "distill": 2000},
                "fashion-mnist": {"teacher": 2000, "factorize": 3000, "distill": 2000}}


def stage_kind(run_name: str) -> str:
    """teacher, distill, factorize or factorize_vib: the cost class of a training run, from its name."""
    name = run_name.removeprefix("train-")
    if name.startswith("teacher"):
        return "teacher"
    if name.startswith("kd-"):
        return "distill"
    return "factorize_vib" if "-vib-" in name else "factorize"


def probe_stages(dataset: str, work: Path, steps: int) -> dict[str, float]:
    """Seconds per step of each kind of training stage of ``dataset`` at the full scale."""
    scale, setting = Scale.full(), SETTINGS[dataset]
    short = ["--max-steps", str(steps), "--warmup-steps", "2", "--checkpoint-every", "0", "--log-every", "10"]
    jobs = [("teacher", SubsetTeacherJob, TEACHER), ("factorize", SubsetFactorizeJob, factorization())]
    if dataset == "dsprites":  # the sweep's vib points and claim b's KD student
        jobs += [("factorize_vib", SubsetFactorizeJob, factorization(infomin="vib")),
                 ("distill", DistillJob, KD_STUDENT)]
    out = {}
    for kind, job, stage in jobs:
        run(job, [*stage_argv(stage, scale, setting, work), *short])
        out[kind] = read_summary(str(stage_folder(work, stage.name)))["seconds_per_step"]
    return out


def probe_transfer(dataset: str, work: Path, steps: int) -> dict[str, float]:
    """Seconds per step of each transfer method (all the pool's labels) on the probe's 30-step networks."""
    scale, setting = Scale.full(), SETTINGS[dataset]
    base_teacher, base_bank, _ = transfer_stages(setting, scale)
    short = ["--max-steps", str(steps), "--warmup-steps", "2", "--checkpoint-every", "0", "--log-every", "10"]
    run(SubsetTeacherJob, [*stage_argv(base_teacher, scale, setting, work), *short])
    run(SubsetFactorizeJob, [*stage_argv(base_bank, scale, setting, work), *short])
    out = {}
    for method in (*TRANSFER_METHODS, WIDE):
        spec = TransferRun(dataset, method, setting.held_out[0], pool_size(setting, scale), 0, steps,
                           scale.transfer_lr, scale.batch_size, VAL_SIZE, 500)
        result = train_transfer_run(spec, stage_folder(work, base_bank.name), stage_folder(work, base_teacher.name),
                                    work / "transfer" / method, checkpoint_every=0)
        out[method] = result["seconds_per_step"]
    return out


def project(seconds: dict[str, dict[str, dict[str, float]]], output: Path) -> dict[str, Any]:
    """Minutes of every planned run, per experiment in the order the chains run them (shared runs counted once)."""
    scale = Scale.full()
    plans = [("disentanglement", "dsprites", lambda w: disentanglement_runs(scale, w)),
             ("sweep", "dsprites", lambda w: sweep_runs(scale, w)),
             ("init_ckn", "dsprites", lambda w: init_ckn_runs(SETTINGS["dsprites"], scale, w)),
             ("transfer", "dsprites", lambda w: transfer_runs(SETTINGS["dsprites"], scale, w)),
             ("transfer", "fashion-mnist", lambda w: transfer_runs(SETTINGS["fashion-mnist"], scale, w)),
             ("init_ckn", "fashion-mnist", lambda w: init_ckn_runs(SETTINGS["fashion-mnist"], scale, w))]
    pools = {name: pool_size(setting, scale) for name, setting in SETTINGS.items()}
    seen: set[tuple[str, str]] = set()
    table = {}
    for experiment, dataset, plan in plans:
        rows = {"train": 0.0, "transfer": 0.0, "train_runs": 0, "transfer_runs": 0, "score_runs": 0}
        for r in plan(output / "full" / dataset):
            if (dataset, r.name) in seen:
                continue
            seen.add((dataset, r.name))
            if r.kind == "train":
                kind = stage_kind(r.name)
                steps = CONFIG_STEPS[dataset]["factorize" if kind.startswith("factorize") else kind]
                rows["train"] += seconds[dataset]["stages"][kind] * steps / 60
            elif r.kind == "transfer":
                method, labels = r.name.split("-")[3], max(2, math.ceil(fraction_of(r.name) * pools[dataset]))
                rows["transfer"] += seconds[dataset]["transfer"][method] * transfer_steps(scale, labels) / 60
            rows[f"{r.kind}_runs"] += 1
        table[f"{experiment} {dataset}"] = {k: round(v, 1) if isinstance(v, float) else v for k, v in rows.items()}
    return table


def probe(output: Path, command: str, steps: int = PROBE_STEPS) -> Path:
    """Time every kind of run for ``steps`` steps, price the planned runs, write ``cost-probe-full.json``."""
    commit = git_commit()  # now: the checkout may change while the probe runs
    seconds: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for dataset in ("dsprites", "fashion-mnist"):
            work = Path(folder) / dataset
            seconds[dataset] = {"stages": probe_stages(dataset, work, steps),
                                "transfer": probe_transfer(dataset, work, steps)}
    results = {"experiment": "cost_probe", "scale": "full", "probe_steps": steps, "seconds_per_step": seconds,
               "projected_minutes": project(seconds, Path("runs/experiments-full")), "commit": commit,
               "command": command}
    path = output / "cost-probe-full.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


def reproject(output: Path, command: str) -> Path:
    """Price the current plan with the seconds per step already measured in ``cost-probe-full.json`` (a change of
    step counts needs no new timing); the projection's own commit and command are recorded next to the probe's."""
    path = output / "cost-probe-full.json"
    results = json.loads(path.read_text())
    results["projected_minutes"] = project(results["seconds_per_step"], Path("runs/experiments-full"))
    results["projection"] = {"commit": git_commit(), "command": command}
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


def short_commit(record: dict[str, Any]) -> str:
    commit = record["commit"]
    return commit[:12] + ("-dirty" if commit.endswith("-dirty") else "")


def probe_table(results: dict[str, Any]) -> str:
    """Markdown: seconds per step measured, and the projected CPU minutes of each experiment's new runs."""
    lines = ["| experiment | new training runs | training (min) | transfer runs | transfer (min) | scoring runs |",
             "|---|---:|---:|---:|---:|---:|"]
    total = 0.0
    for name, row in results["projected_minutes"].items():
        total += row["train"] + row["transfer"]
        lines.append(f"| {name} | {row['train_runs']} | {row['train']:,.0f} | {row['transfer_runs']} | "
                     f"{row['transfer']:,.0f} | {row['score_runs']} |")
    measured = "; ".join(f"{dataset}: " + ", ".join(f"{k} {v:.2f}" for k, v in {**d['stages'], **d['transfer']}.items())
                         for dataset, d in results["seconds_per_step"].items())
    lines.append(f"\nTraining and transfer total: {total / 60:.1f} hours on this machine as measured (scoring not "
                 f"included). Seconds per step ({results['probe_steps']}-step probes, 1 thread, the machine shared "
                 f"as during the runs): {measured}. `{results['command']}` at {short_commit(results)}"
                 + (f"; steps priced by `{results['projection']['command']}` at {short_commit(results['projection'])}"
                    if "projection" in results else ""))
    return "\n".join(lines)


__all__ = ["PROBE_STEPS", "probe", "probe_table", "project", "reproject", "stage_kind"]
