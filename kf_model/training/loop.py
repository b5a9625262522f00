"""One loop for every job: build, prepare, resume, step, checkpoint, validate, save (:func:`fit`)."""

from __future__ import annotations

import json
import math
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import GradientAccumulationPlugin, ProjectConfiguration, set_seed
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm import tqdm

import kf_model
from kf_model.errors import InvalidArgumentError, KFError
from kf_model.training.checkpoints import CHECKPOINTS_DIR, Checkpointer, load_checkpoint, resolve_resume
from kf_model.training.config import JobConfig
from kf_model.training.data import DataInfo, batch_stream, load_training_data, make_train_loader
from kf_model.training.optim import build_optimizer, total_steps, warmup_cosine
from kf_model.training.options import parse_args
from kf_model.training.validation import accuracy_report, collect_predictions, compare
from kf_model.utils import writable_folder

if TYPE_CHECKING:
    from kf_model.training.jobs import Job


TRAINING_FILE = "training.json"
LOG_FILE = "log.jsonl"


@dataclass
class Progress:
    """The loop's own state, checkpointed with the model (``register_for_checkpointing``)."""

    step: int = 0  # optimizer steps done
    elapsed_s: float = 0.0  # training wall time over all resumed segments

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "elapsed_s": self.elapsed_s}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.elapsed_s = int(state["step"]), float(state["elapsed_s"])


def read_summary(folder: str) -> dict[str, Any]:
    path = Path(folder) / TRAINING_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def command_line(job: Job, argv: Sequence[str], world_size: int) -> str:
    launcher = ["python"] if world_size == 1 else ["accelerate", "launch", "--num_processes", str(world_size)]
    return shlex.join([*launcher, job.script, *argv])


@dataclass
class FitResult:
    """What a run leaves in memory: the summary written to ``training.json`` (None when stopped early with
    --stop-after-steps) and the trained, unwrapped model (on every process) in eval mode."""

    summary: dict[str, Any] | None
    model: nn.Module
    job: Job
    step: int


def finish_trackers(accelerator: Accelerator) -> None:
    """``end_training`` minus destroying the process group: a caller may go on with other distributed work."""
    for tracker in accelerator.trackers:
        tracker.finish()


class FitData(NamedTuple):
    """A run's data given in memory (``fit(..., data=)``) instead of loaded from ``config.data``."""

    train: Dataset
    val: Dataset | None
    info: DataInfo


@dataclass
class _Run:
    """What the steps of :func:`fit` share: the prepared objects and the run's bookkeeping."""

    config: JobConfig
    accelerator: Accelerator
    job: Job
    info: DataInfo
    train_set: Dataset
    val_set: Dataset | None
    model: nn.Module
    objective: nn.Module | None
    optimizer: torch.optim.Optimizer
    train_loader: Any
    scheduler: Any
    trainable: list[nn.Module]
    max_steps: int
    stop_at: int
    progress: Progress
    checkpointer: Checkpointer
    resume_from: Path | None = None
    last_means: dict[str, float] = field(default_factory=dict)

    @property
    def output_dir(self) -> Path:
        return Path(self.config.run.output_dir)


RUN_MARKERS = ("training.json", "log.jsonl", "checkpoints")  # what a run of this loop leaves in its folder
RUN_WRITES = ("README.md", "factors.json", "config.json", "model.safetensors", "ckn", "tsn")  # and writes over


def check_output_folder(config: JobConfig) -> None:
    """The output folder must not be the teacher's or the data's, nor hold files of the names a run writes
    (``RUN_WRITES``) unless it is an earlier run's folder (``RUN_MARKERS``): a run once replaced someone's
    README.md, a teacher and a dataset's files. Anything else there (a config file) is left alone. Checked before
    any data is read."""
    folder = writable_folder(config.run.output_dir, "--output-dir")
    inputs = {"--teacher": getattr(getattr(config, "teacher", None), "teacher", None),
              "--data-dir": config.data.source.data_dir}
    for option, path in inputs.items():
        if path and Path(path).exists() and Path(path).resolve() == folder.resolve():
            raise InvalidArgumentError(f"--output-dir {folder} is the {option} folder: a run would write over it; "
                                       "give a new folder")
    clashes = [name for name in RUN_WRITES if (folder / name).exists()]
    if clashes and not any((folder / m).exists() for m in RUN_MARKERS):
        raise InvalidArgumentError(f"--output-dir {folder} holds {', '.join(clashes)} and no earlier run (no "
                                   f"{', '.join(RUN_MARKERS)}): a run would write over them; give a new folder")


def fit(job_class: type[Job], config: JobConfig, *, data: FitData | None = None,
        job_options: dict[str, Any] | None = None) -> FitResult:
    """Train ``job_class`` as ``config`` (a ``job_class.config_class``) says; the summary is also written to
    ``<output-dir>/training.json``. ``data``: the datasets in memory (else ``config.data`` is loaded);
    ``job_options``: keyword arguments of the job beside its config (networks built in memory)."""
    if not isinstance(config, job_class.config_class):
        raise InvalidArgumentError(f"{job_class.__name__} trains from a {job_class.config_class.__name__}, got "
                                   f"{type(config).__name__}: build it with {job_class.config_class.__name__}"
                                   ".from_args(parsed_flags) or directly")
    if not config.run.output_dir:
        raise InvalidArgumentError("fit needs an output folder (RunConfig.output_dir, --output-dir)")
    check_output_folder(config)  # before any data is read
    accelerator = _accelerator(config)
    if config.run.num_threads:
        torch.set_num_threads(config.run.num_threads)
    set_seed(config.run.seed)  # the same initial weights on every process
    run = _prepare(job_class, config, accelerator, data, job_options or {})
    _announce(run)
    _train(run)
    if run.progress.step < run.max_steps:  # --stop-after-steps: leave the checkpoint, write nothing else
        accelerator.print(f"stopped at step {run.progress.step} of {run.max_steps}; continue with --resume latest")
        finish_trackers(accelerator)
        return FitResult(None, accelerator.unwrap_model(run.model), run.job, run.progress.step)
    return _finish(run)


def _accelerator(config: JobConfig) -> Accelerator:
    settings, output_dir = config.run, Path(config.run.output_dir)
    return Accelerator(
        cpu=settings.cpu,
        mixed_precision=settings.mixed_precision,
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=config.schedule.gradient_accumulation_steps, sync_with_dataloader=False),  # never end early
        log_with=None if settings.log_with == "none" else settings.log_with,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
    )


def _prepare(job_class: type[Job], config: JobConfig, accelerator: Accelerator, data: FitData | None,
             job_options: dict[str, Any]) -> _Run:
    """Data, networks, optimizer and schedule, prepared by Accelerate; then the resume, if any."""
    train_set, val_set, info = data if data is not None else load_training_data(
        config.data, job_class.data_input_spec(config))
    job = job_class(config, info, **job_options)
    train_set, val_set = job.select_data(train_set), (None if val_set is None else job.select_data(val_set))
    job.build()
    if job.teacher is not None:
        job.teacher.to(accelerator.device)
    trainable = [job.model] + ([job.objective] if job.objective is not None else [])
    train_loader = make_train_loader(train_set, config.loader)
    optimizer = build_optimizer(trainable, config.optimizer)
    model, objective, optimizer, train_loader = accelerator.prepare(job.model, job.objective, optimizer, train_loader)
    if len(train_loader) == 0:
        raise KFError(f"{len(train_set)} training images make no full batch of {config.loader.batch_size} per process")
    schedule, settings = config.schedule, config.run
    max_steps = total_steps(schedule, len(train_loader))
    scheduler = warmup_cosine(optimizer, schedule.warmup_steps, max_steps, schedule.min_lr_ratio)
    progress = Progress()
    accelerator.register_for_checkpointing(progress, scheduler)
    stop_at = min(max_steps, settings.stop_after_steps) if settings.stop_after_steps else max_steps
    run = _Run(config, accelerator, job, info, train_set, val_set, model, objective, optimizer, train_loader,
               scheduler, trainable, max_steps, stop_at, progress,
               Checkpointer(accelerator, Path(settings.output_dir), settings.checkpoints_total_limit))
    _resume(run)
    return run


def _resume(run: _Run) -> None:
    """kf_model.training.checkpoints: complete checkpoints only, written aside and renamed into place."""
    accelerator, settings = run.accelerator, run.config.run
    run.resume_from, notes = resolve_resume(settings.resume, run.output_dir, accelerator.num_processes,
                                            accelerator.process_index)
    for note in notes:
        accelerator.print(note)
    if run.resume_from is not None:
        load_checkpoint(accelerator, run.resume_from)
        accelerator.print(f"resumed from {run.resume_from} at step {run.progress.step}")
    elif settings.resume == "latest":
        accelerator.print(f"--resume latest: no complete checkpoint in {run.output_dir / CHECKPOINTS_DIR} yet, "
                          "starting afresh")


def _announce(run: _Run) -> None:
    """The log file cut back to the resumed step, one line saying what trains, the trackers."""
    config, schedule, settings = run.config, run.config.schedule, run.config.run
    if run.accelerator.is_main_process:
        run.output_dir.mkdir(parents=True, exist_ok=True)
        log_path = run.output_dir / LOG_FILE
        step = run.progress.step
        kept = [line for line in (log_path.read_text().splitlines() if log_path.is_file() and step else [])
                if json.loads(line)["step"] <= step]
        log_path.write_text("".join(line + "\n" for line in kept))
        counts = run.job.parameter_counts()
        print(f"{run.job.name}: {run.info.name}, {len(run.train_set):,} training images, {run.max_steps} steps of "
              f"{config.loader.batch_size} x {schedule.gradient_accumulation_steps} x "
              f"{run.accelerator.num_processes} process(es) on {run.accelerator.device}; parameters: "
              + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    if settings.log_with != "none":
        run.accelerator.init_trackers(run.job.name, config={
            k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in run.job.recorded_options().items()})


def _train(run: _Run) -> None:
    """Steps until ``stop_at``: accumulate, clip, step; log every ``log_every``; checkpoint as asked."""
    accelerator, settings, progress = run.accelerator, run.config.run, run.progress
    model, objective = run.model, run.objective
    model.train()
    if objective is not None:
        objective.train()
    bar = tqdm(total=run.max_steps, initial=progress.step, desc=run.job.name, disable=not accelerator.is_main_process,
               dynamic_ncols=True)
    window: list[dict[str, Tensor]] = []  # loss terms since the last log line
    start = time.perf_counter()
    params = [p for m in run.trainable for p in m.parameters()]
    accumulation = run.config.schedule.gradient_accumulation_steps
    batches = batch_stream(accelerator, run.train_loader, progress.step * accumulation)
    while progress.step < run.stop_at:
        _, (images, targets) = next(batches)
        with accelerator.accumulate(*[m for m in (model, objective) if m is not None]):
            with accelerator.autocast():
                loss, terms = run.job.loss(model, objective, images, targets)
            accelerator.backward(loss)
            if accelerator.sync_gradients and settings.clip_grad_norm > 0:
                accelerator.clip_grad_norm_(params, settings.clip_grad_norm)
            run.optimizer.step()
            run.optimizer.zero_grad(set_to_none=True)
        window.append({"loss": loss.detach(), **{k: v for k, v in terms.items() if k != "total"}})  # no sync
        if not accelerator.sync_gradients:
            continue
        run.scheduler.step()
        progress.step += 1
        bar.update(1)
        if progress.step % settings.log_every == 0 or progress.step == run.stop_at:
            _log(run, window, bar)
            window = []
        interrupted = progress.step == run.stop_at < run.max_steps
        if (settings.checkpoint_every and progress.step % settings.checkpoint_every == 0) or interrupted:
            progress.elapsed_s += time.perf_counter() - start
            start = time.perf_counter()
            run.checkpointer.save(progress.step)
    bar.close()
    progress.elapsed_s += time.perf_counter() - start


def _log(run: _Run, window: list[dict[str, Tensor]], bar: tqdm) -> None:
    """One log line: the mean of each loss term since the last one (log.jsonl, the progress bar, trackers)."""
    means = {k: float(torch.stack([w[k].float() for w in window]).mean()) for k in window[0]}
    lr = run.scheduler.get_last_lr()[0]
    step = run.progress.step
    bar.set_postfix(loss=f"{means['loss']:.4f}", lr=f"{lr:.2e}", refresh=False)
    if run.accelerator.is_main_process:
        with (run.output_dir / LOG_FILE).open("a") as log:
            log.write(json.dumps({"step": step, "lr": lr, **means}) + "\n")
    if run.config.run.log_with != "none":
        run.accelerator.log({"lr": lr, **{f"train/{k}": v for k, v in means.items()}}, step=step)
    run.last_means = means


def _finish(run: _Run) -> FitResult:
    """Identical buffers everywhere, the summary, a quick validation, the job's outputs."""
    accelerator = run.accelerator
    trained = accelerator.unwrap_model(run.model)
    if accelerator.num_processes > 1:  # BatchNorm running stats saw each process's last batches
        for buffer in trained.buffers():
            torch.distributed.broadcast(buffer.data, src=0)
    trained.eval()
    summary = _summary(run)
    if run.val_set is not None:
        _validate(run, trained, summary)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        run.job.save(run.output_dir, trained, summary)
        (run.output_dir / TRAINING_FILE).write_text(json.dumps(summary, indent=2) + "\n")
        _print_validation(summary, run.progress)
    accelerator.wait_for_everyone()
    finish_trackers(accelerator)
    return FitResult(summary, trained, run.job, run.progress.step)


def _summary(run: _Run) -> dict[str, Any]:
    accelerator, progress, settings = run.accelerator, run.progress, run.config.run
    accumulation = run.config.schedule.gradient_accumulation_steps
    summary = {
        "job": run.job.name, "dataset": run.info.name,
        "command": command_line(run.job, settings.argv, accelerator.num_processes),
        "args": run.job.recorded_options(), "world_size": accelerator.num_processes, "device": str(accelerator.device),
        "steps": progress.step, "max_steps": run.max_steps, "train_images": len(run.train_set),
        "epochs": round(progress.step * accumulation / len(run.train_loader), 3),
        "final_train_loss": round(run.last_means.get("loss", math.nan), 6),  # mean over the last log interval
        "final_train_terms": {k: round(v, 6) for k, v in run.last_means.items()},
        "parameters": run.job.parameter_counts(), "wall_time_s": round(progress.elapsed_s, 1),
        "seconds_per_step": round(progress.elapsed_s / max(progress.step, 1), 4),
        "resumed_from": str(run.resume_from) if run.resume_from else None,
        "versions": {"kf": kf_model.__version__, "torch": torch.__version__},
    }
    if run.info.skipped:  # --skip-bad-images: what the scan left out, as the README promises
        summary["skipped_images"] = run.info.skipped
    return summary


def _validate(run: _Run, trained: nn.Module, summary: dict[str, Any]) -> None:
    """The quick validation of the trained model (and of the teacher, for comparison)."""
    job, info, accelerator = run.job, run.info, run.accelerator
    batch = dict(batch_size=run.config.run.eval_batch_size, num_workers=run.config.loader.num_workers)
    predictions = collect_predictions(accelerator, lambda x: job.predict(trained, x), run.val_set, **batch)
    summary["validation"] = accuracy_report(predictions, info.tasks, info.one_vs_rest, job.kway_model)
    if job.teacher is not None:
        predictions = collect_predictions(accelerator, lambda x: job.teacher(x).logits, run.val_set, **batch)
        summary["teacher_validation"] = accuracy_report(predictions, info.tasks, info.one_vs_rest, True)
        summary["validation_vs_teacher"] = compare(summary["validation"], summary["teacher_validation"])


def _print_validation(summary: dict[str, Any], progress: Progress) -> None:
    report = summary.get("validation")
    if report:
        print(f"validation ({report['samples']} images): mean accuracy {report['mean_accuracy']:.2f}%"
              + (f", K-way {report['kway_accuracy']:.2f}%" if "kway_accuracy" in report else "")
              + f"; {progress.step} steps in {progress.elapsed_s:.0f} s")
    if "validation_vs_teacher" in summary:
        print("validation, points vs the teacher: " + ", ".join(
            f"{k} {v:+.2f}" for k, v in summary["validation_vs_teacher"].items()))


def run(job_class: type[Job], argv: Sequence[str] | None = None) -> FitResult:
    """Parse the command line of ``job_class``'s script and train (in-process: tests call this). The one place
    where the parsed flags become the job's config: below :func:`fit`, nothing reads a Namespace."""
    args = parse_args(job_class.parser(), argv, required=job_class.required)
    return fit(job_class, job_class.config_class.from_args(args))


def cli(job_class: type[Job]) -> None:
    """Entry point of a script: kf's errors end the run with their message, not a traceback."""
    try:
        run(job_class)
    except KFError as error:
        raise SystemExit(f"error: {error}") from error
    finally:
        PartialState().destroy_process_group()  # a clean exit under accelerate launch / torchrun
