"""The training machinery (kf_model.training and the train/ scripts), on tiny networks and tiny data.

Runs go through ``kf_model.training.run`` in-process (what each script's ``cli`` calls), plus one subprocess
smoke test of a script under plain ``python``. Every run uses --cpu and a few steps of a few images.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kf_model.bank import FactorBank, load_module, save_module
from kf_model.data import load_dataset
from kf_model.errors import KFError
from kf_model.models import Teacher, count_parameters
from kf_model.training import (
    DataConfig,
    DistillJob,
    FactorizeJob,
    TeacherJob,
    backbone_config,
    load_training_data,
    parse_args,
    run,
)

ROOT = Path(__file__).resolve().parents[1]

# A CKN / TSN small enough for a step to take milliseconds.
TINY_FACTORS = ["--ckn-width", "4", "--ckn-num-stages", "3", "--ckn-stem-stride", "2",
                "--tsn-widths", "4", "4", "--tsn-strides", "4", "4"]


def make_teacher(folder: Path, dataset: str = "dsprites") -> Path:
    """A tiny untrained (seeded) teacher saved as train_teacher.py would: enough to factorize from."""
    data = load_dataset(dataset, "test", limit=1)
    torch.manual_seed(0)
    backbone = backbone_config("cnn", 4, 3, 2, dataset == "dsprites", data.input_spec)
    teacher = Teacher(backbone, [t.to_dict() for t in data.tasks], one_vs_rest=data.one_vs_rest)
    save_module(teacher.eval(), folder)
    return folder


def losses(folder: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (folder / "log.jsonl").read_text().splitlines()]


def common(output_dir: Path, *extra: str, dataset: str = "dsprites", limit: int = 64, steps: int = 6) -> list[str]:
    return ["--dataset", dataset, "--limit", str(limit), "--batch-size", "16", "--max-steps", str(steps),
            "--warmup-steps", "1", "--log-every", "2", "--cpu", "--output-dir", str(output_dir), *extra]


@pytest.fixture(scope="module")
def dsprites_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_teacher(tmp_path_factory.mktemp("teacher"), "dsprites")


@pytest.fixture(scope="module")
def factorized(tmp_path_factory: pytest.TempPathFactory, dsprites_teacher: Path):
    """One short factorization of dSprites (shared by the tests that only read its outputs)."""
    out = tmp_path_factory.mktemp("bank")
    result = run(FactorizeJob, common(out, "--teacher", str(dsprites_teacher), *TINY_FACTORS, "--coord-channels",
                                      "--lr", "1e-2", "--val-size", "40", steps=16, limit=32))
    return out, result


# ----------------------------------------------------------------------------- options

def test_config_file_values_are_defaults_that_flags_override(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"dataset": "dsprites", "batch-size": 7, "lr": 0.5, "tsn_widths": [3, 5]}))
    args = parse_args(FactorizeJob.parser(), ["--config", str(config), "--lr", "0.1", "--output-dir", "x",
                                              "--teacher", "t"], required=FactorizeJob.required)
    assert (args.dataset, args.batch_size, args.lr, args.tsn_widths) == ("dsprites", 7, 0.1, [3, 5])

    config.write_text(json.dumps({"dataset": "dsprites", "no_such_option": 1}))
    with pytest.raises(SystemExit):
        parse_args(FactorizeJob.parser(), ["--config", str(config), "--output-dir", "x", "--teacher", "t"])
    with pytest.raises(SystemExit):  # --teacher is required, from the file or the command line
        parse_args(FactorizeJob.parser(), ["--dataset", "dsprites", "--output-dir", "x"],
                   required=FactorizeJob.required)


BAD_CONFIG_VALUES = [  # key, value, what the refusal must say
    ("optimizer", "adam", "'adamw', 'sgd'"),  # used to run AdamW while training.json said "adam"
    ("max_steps", -5, "must be >= 1"),  # used to train one step and write a bank
    ("tsn_widths", 8, "must be a list"),
    ("tsn_widths", [8, "x"], "expected an integer"),
    ("mixed_precision", "fp8", "'no', 'fp16', 'bf16'"),
    ("infomin", "vibx", "'batch', 'vib'"),
    ("epochs", 0, "must be > 0"),
    ("lr", 0, "must be > 0"),
    ("batch_size", 7.5, "expected an integer"),
    ("min_lr_ratio", 2, "must be <= 1"),
    ("beta", "nan", "finite"),
    ("label_smoothing", 1, "must be < 1"),
    ("ckn_num_stages", 2, "must be >= 3"),
    ("variational", "yes", "true or false"),
    ("lr", True, "single value"),
    ("optimiser", "sgd", "did you mean optimizer"),
]


@pytest.mark.parametrize(("key", "value", "message"), BAD_CONFIG_VALUES)
def test_config_values_are_checked_like_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              key: str, value, message: str) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"dataset": "dsprites", key: value}))
    with pytest.raises(SystemExit) as exit_info:
        parse_args(FactorizeJob.parser(), ["--config", str(config), "--output-dir", "x", "--teacher", "t"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert key in err and message in err, err


def test_config_values_are_converted_like_flags(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"coord_channels": False, "variational": True, "limit": None, "lr": "0.5",
                                  "epochs": 2, "tsn_strides": ["2", 4], "resume": "latest"}))
    args = parse_args(FactorizeJob.parser(), ["--config", str(config), "--dataset", "dsprites", "--output-dir", "x",
                                              "--teacher", "t", "--coord-channels"])
    assert (args.coord_channels, args.variational, args.limit, args.lr) == (True, True, None, 0.5)
    assert (args.epochs, args.tsn_strides, args.resume) == (2.0, [2, 4], "latest")


@pytest.mark.parametrize("flags", [["--max-steps", "-5"], ["--lr", "0"], ["--epochs", "inf"], ["--seed", "-1"],
                                   ["--warmup-steps", "-1"], ["--checkpoints-total-limit", "0"], ["--limit", "0"]])
def test_flag_ranges(flags: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(TeacherJob.parser(), ["--dataset", "dsprites", "--output-dir", "x", *flags])


def test_output_dir_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "f").write_text("")
    for output_dir in (tmp_path / "f", tmp_path / "f" / "sub"):
        with pytest.raises(SystemExit):
            parse_args(TeacherJob.parser(), ["--dataset", "dsprites", "--output-dir", str(output_dir)])
        assert "is a file, not a folder" in capsys.readouterr().err


def test_shipped_configs_pass_the_checks() -> None:
    jobs = {"teacher": TeacherJob, "distill": DistillJob, "factorize": FactorizeJob}
    configs = sorted(c for c in (ROOT / "train" / "configs").glob("*.json") if not c.stem.endswith("_tasks"))
    assert len(configs) == 9  # the two bundled banks (3 each) + the own-model recipe (2) + the photo bank (1)
    for config in configs:
        job = jobs[config.stem.rsplit("_", 1)[1]]
        parse_args(job.parser(), ["--config", str(config)], required=())


def test_a_refused_config_writes_nothing(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"max_steps": -5}))
    with pytest.raises(SystemExit):
        run(TeacherJob, ["--config", str(config), "--dataset", "dsprites", "--output-dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_epochs_and_max_steps() -> None:
    from kf_model.training import ScheduleConfig, total_steps

    def steps(*argv: str, batches: int = 10) -> int:
        args = parse_args(TeacherJob.parser(), ["--dataset", "dsprites", "--output-dir", "x", *argv])
        return total_steps(ScheduleConfig.from_args(args), batches)

    assert steps() == 10  # one epoch by default
    assert steps("--epochs", "2.5") == 25
    assert steps("--max-steps", "7") == 7
    assert steps("--max-steps", "70", "--epochs", "2") == 20  # whichever comes first
    assert steps("--epochs", "2", "--gradient-accumulation-steps", "4") == 4  # optimizer steps: 10 // 4 per epoch


def test_tensorboard_is_optional_with_a_clear_message(capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
        pytest.skip("tensorboard is installed here")
    with pytest.raises(SystemExit):
        parse_args(TeacherJob.parser(), ["--dataset", "dsprites", "--output-dir", "x", "--log-with", "tensorboard"])
    assert "pip install tensorboard" in capsys.readouterr().err


def test_validation_images_are_never_trained_on() -> None:
    args = parse_args(TeacherJob.parser(), ["--dataset", "dsprites", "--output-dir", "x", "--val-size", "500",
                                            "--limit", "20000"])
    train, val, info = load_training_data(DataConfig.from_args(args))
    assert (len(train), len(val), info.name) == (20000, 500, "dsprites")
    assert not set(train.grid_indices.tolist()) & set(val.grid_indices.tolist())
    args.limit, args.data_seed = 1000, 1  # another subset: the same validation images
    assert torch.equal(load_training_data(DataConfig.from_args(args))[1].grid_indices, val.grid_indices)


# ----------------------------------------------------------------------------- teacher and KD baseline

def test_teacher_one_vs_rest_trains_and_saves(tmp_path: Path) -> None:
    result = run(TeacherJob, common(tmp_path, "--width", "4", "--num-stages", "3", "--lr", "1e-2",
                                    "--val-size", "50", dataset="fashion-mnist", limit=32, steps=16))
    curve = losses(tmp_path)
    assert curve[-1] < 0.8 * curve[0], curve
    teacher = load_module(Teacher, tmp_path, "teacher")
    assert teacher.one_vs_rest and len(teacher.tasks) == 10
    summary = json.loads((tmp_path / "training.json").read_text())
    assert summary["steps"] == 16 and summary["command"].startswith("python train/train_teacher.py --dataset")
    assert set(summary["validation"]) >= {"accuracy", "mean_accuracy", "kway_accuracy", "samples"}
    assert summary["validation"]["samples"] == 50
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(teacher(x).class_logits, result.model(x).class_logits)


def test_distill_matches_the_factorization_size(tmp_path: Path) -> None:
    teacher = make_teacher(tmp_path / "teacher", "fashion-mnist")
    config = tmp_path / "factorize.json"
    config.write_text(json.dumps({"ckn_width": 8, "ckn_num_stages": 3, "tsn_widths": [4, 8], "tsn_strides": [2, 2]}))
    result = run(DistillJob, common(tmp_path / "kd", "--teacher", str(teacher), "--num-stages", "3",
                                    "--match-factorization", str(config), dataset="fashion-mnist", limit=32, steps=4))
    counts = result.summary["parameters"]
    assert abs(counts["model"] - counts["factorization"]) < 0.1 * counts["factorization"], counts
    assert result.summary["args"]["width"] > 8  # 10 TSNs make the KD student wider than the CKN
    student = load_module(Teacher, tmp_path / "kd", "student")
    assert count_parameters(student) == counts["model"]


# ----------------------------------------------------------------------------- factorization

def test_factorize_loss_goes_down(factorized) -> None:
    out, _ = factorized
    curve = losses(out)
    assert len(curve) == 8 and curve[-1] < curve[0] - 0.5, curve


def test_factorize_writes_a_bank_that_loads_and_assembles(factorized, dsprites_teacher: Path) -> None:
    out, result = factorized
    bank = FactorBank.from_pretrained(out)
    assert [t.name for t in bank.tasks] == ["shape", "scale", "orientation", "pos_x", "pos_y"]
    x = torch.rand(4, 1, 64, 64)
    assembled, trained = bank.assemble(["pos_y", "shape"])(x), result.model(x)
    for task in ("pos_y", "shape"):
        torch.testing.assert_close(assembled[task], trained[task], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(bank.factor(task)(x), trained[task], atol=1e-5, rtol=1e-5)
    training = bank.manifest.training
    assert training["steps"] == 16 and len(training["commands"]) == 1  # the random teacher has no training.json
    assert "factorize.py" in training["commands"][0] and training["objective"]["infomin"] == "batch"
    assert bank.manifest.teacher["params"] == count_parameters(load_module(Teacher, dsprites_teacher, "t"))
    summary = json.loads((out / "training.json").read_text())
    assert summary["validation"]["samples"] == 40 and "teacher_validation" in summary


def test_init_ckn_from_teacher(tmp_path: Path, dsprites_teacher: Path) -> None:
    same = ["--ckn-width", "4", "--ckn-num-stages", "3", "--ckn-stem-stride", "2", "--coord-channels"]
    args = parse_args(FactorizeJob.parser(), common(tmp_path, "--teacher", str(dsprites_teacher), *same,
                                                    "--init-ckn-from-teacher"))
    config = FactorizeJob.config_class.from_args(args)
    _, _, info = load_training_data(config.data)
    job = FactorizeJob(config, info)
    job.build()
    teacher = job.teacher.backbone.state_dict()
    for name, value in job.model.ckn.backbone.state_dict().items():
        assert torch.equal(value, teacher[name]), name
    wider = dataclasses.replace(config, networks=dataclasses.replace(config.networks, ckn_width=8))
    with pytest.raises(KFError, match="architecture"):
        FactorizeJob(wider, info).build()


def test_kill_and_resume_gives_the_same_weights(tmp_path: Path, dsprites_teacher: Path) -> None:
    """6 steps in one go == 4 steps, a stop, and a resumed run to 6 (mid-epoch: 48 images, 3 batches an epoch).

    Variational TSNs draw noise every step, so the RNG state has to come back too."""
    def args(name: str, *extra: str) -> list[str]:
        return common(tmp_path / name, "--teacher", str(dsprites_teacher), *TINY_FACTORS, "--coord-channels",
                      "--variational", "--infomin", "vib", "--checkpoint-every", "3", *extra, limit=48)

    run(FactorizeJob, args("once"))
    stopped = run(FactorizeJob, args("twice", "--stop-after-steps", "4"))
    assert stopped.summary is None and stopped.step == 4
    assert not (tmp_path / "twice" / "factors.json").exists()
    assert sorted(p.name for p in (tmp_path / "twice" / "checkpoints").iterdir()) == ["checkpoint_0", "checkpoint_1"]
    resumed = run(FactorizeJob, args("twice", "--resume", "latest"))
    assert resumed.summary["resumed_from"].endswith("checkpoint_1") and resumed.step == 6

    names = ["ckn"] + [f"tsn/{t}" for t in ("shape", "scale", "orientation", "pos_x", "pos_y")]
    for name in names:
        once = load_file(tmp_path / "once" / name / "model.safetensors")
        twice = load_file(tmp_path / "twice" / name / "model.safetensors")
        assert once.keys() == twice.keys()
        for key in once:
            torch.testing.assert_close(twice[key], once[key], atol=1e-6, rtol=0, msg=f"{name}: {key}")
    # The log of the resumed run continues the interrupted one (no duplicated steps).
    steps = [json.loads(line)["step"] for line in (tmp_path / "twice" / "log.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]


def test_push_to_hub_publishes_a_bank_that_loads_by_tag(tmp_path: Path, dsprites_teacher: Path,
                                                        hub_server, hub_repo_id: str, hf_cache: Path) -> None:
    run(FactorizeJob, common(tmp_path, "--teacher", str(dsprites_teacher), *TINY_FACTORS, "--coord-channels",
                             "--push-to-hub", hub_repo_id, "--hub-tag", "v1", steps=2, limit=32))
    local = FactorBank.from_pretrained(tmp_path)
    pulled = FactorBank.from_pretrained(hub_repo_id, revision="v1", tasks=["scale"])
    assert pulled.manifest.ckn_fingerprint == local.manifest.ckn_fingerprint
    x = torch.rand(2, 1, 64, 64)
    torch.testing.assert_close(pulled.assemble()(x)["scale"], local.assemble(["scale"])(x)["scale"])
    pushed = json.loads((tmp_path / "training.json").read_text())["pushed"]
    assert pushed["repo_id"] == hub_repo_id and pushed["tag"] == "v1"


# ----------------------------------------------------------------------------- the scripts themselves

@pytest.mark.slow
def test_scripts_run_with_plain_python(tmp_path: Path, dsprites_teacher: Path) -> None:
    config = tmp_path / "factorize.json"
    config.write_text(json.dumps({"dataset": "dsprites", "ckn_width": 4, "ckn_num_stages": 3, "ckn_stem_stride": 2,
                                  "tsn_widths": [4], "tsn_strides": [4], "coord_channels": True}))
    command = [sys.executable, "train/factorize.py", "--config", str(config), "--teacher", str(dsprites_teacher),
               "--limit", "16", "--batch-size", "8", "--max-steps", "2", "--cpu", "--output-dir", str(tmp_path / "b")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "factorize" in done.stderr  # the progress bar
    assert FactorBank.from_pretrained(tmp_path / "b").manifest.training["steps"] == 2



def test_cli_reports_errors_without_a_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kf_model.training import cli

    monkeypatch.setattr(sys, "argv", ["train/distill.py", "--dataset", "dsprites", "--output-dir", str(tmp_path),
                                      "--teacher", str(tmp_path / "missing"), "--width", "4", "--cpu"])
    with pytest.raises(SystemExit, match="missing"):
        cli(DistillJob)


def test_recipes_are_valid_commands() -> None:
    """Every training command of both recipes parses with its script's parser (config keys included)."""
    from kf_model.recipes import DATASETS, build_recipe

    jobs = {"train/train_teacher.py": TeacherJob, "train/distill.py": DistillJob, "train/factorize.py": FactorizeJob}
    for dataset in DATASETS:
        recipe = build_recipe(dataset, Path("runs"), python=["python"])
        assert [s.name for s in recipe.stages][:3] == ["teacher", "kd_student", "factorize"]
        for stage in recipe.stages[:3]:
            job = jobs[stage.command[1]]
            args = parse_args(job.parser(), stage.command[2:], required=job.required)
            assert args.dataset == dataset and args.max_steps and args.val_size
            if job is FactorizeJob:
                assert args.init_ckn_from_teacher  # the recorded recipes start the CKN from the teacher
            if job is DistillJob:
                assert (ROOT / args.match_factorization).is_file()
        quick = build_recipe(dataset, Path("runs"), python=["python"], quick=True)
        assert "--max-steps" in quick.stages[0].command and "quick" in str(quick.run_dir)


def test_the_own_model_recipe_names_real_options() -> None:
    from kf_model.recipes import build_own_model_recipe

    recipe = build_own_model_recipe(Path("runs"), python=["python"])
    assert [s.name for s in recipe.stages] == ["export", "teacher", "factorize", "evaluate"]
    for stage, job in ((recipe.stages[1], TeacherJob), (recipe.stages[2], FactorizeJob)):
        argv = stage.command[2:]  # past the interpreter and the script
        args = parse_args(job.parser(), argv)
        assert args.data_dir == "runs/own-model/data"
    assert parse_args(TeacherJob.parser(), recipe.stages[1].command[2:]).from_model == "timm:resnet18"


def test_the_readme_shows_the_recorded_own_model_result() -> None:
    """The README's own-model table is the one docs/own-model/results.json holds (rerun: kf_model.recipes)."""
    results = json.loads((ROOT / "docs" / "own-model" / "results.json").read_text())
    readme = (ROOT / "README.md").read_text()
    accuracy = results["accuracy"]
    for name, teacher in accuracy["teacher"].items():
        factor = accuracy["factor"][name]
        row = f"| {name} | {100 * teacher:.2f} | {100 * factor:.2f} | {100 * (factor - teacher):+.2f} |"
        assert row in readme, row
    assert results["targets"]["all_passed"] and results["samples"]["evaluated"] == 10_000


def test_configs_check_themselves_and_come_from_the_parsed_options() -> None:
    from kf_model.errors import InvalidArgumentError
    from kf_model.training import (
        DataSourceConfig,
        FactorNetworksConfig,
        LoaderConfig,
        OptimizerConfig,
        ScheduleConfig,
        TeacherSourceConfig,
    )

    args = parse_args(FactorizeJob.parser(), ["--dataset", "dsprites", "--output-dir", "x", "--lr", "0.5",
                                              "--tsn-widths", "4", "8", "--tsn-strides", "2", "1", "--val-size", "7"])
    assert OptimizerConfig.from_args(args) == OptimizerConfig(lr=0.5)
    assert DataConfig.from_args(args).val_size == 7 and DataConfig.from_args(args).source.dataset == "dsprites"
    assert FactorNetworksConfig.from_args(args).tsn_widths == (4, 8)
    assert LoaderConfig.from_args(args, batch_size=3).batch_size == 3  # given values win over the options
    refused = [(lambda: OptimizerConfig(lr=0), "--lr"), (lambda: OptimizerConfig(optimizer="adam"), "adamw"),
               (lambda: ScheduleConfig(max_steps=0), "--max-steps"), (lambda: LoaderConfig(batch_size=0), "batch"),
               (lambda: DataSourceConfig(), "--data-dir"),
               (lambda: DataConfig(DataSourceConfig("dsprites"), -1), "val"),
               (lambda: TeacherSourceConfig(image_size=0), "image-size"),
               (lambda: FactorNetworksConfig(tsn_widths=(8,), tsn_strides=(2, 2)), "same length")]
    for make, match in refused:
        with pytest.raises(InvalidArgumentError, match=match):
            make()


def test_job_configs_come_from_the_flags_and_refuse_bad_values(tmp_path: Path) -> None:
    """What a job reads is its config (Job.config_class), built once from the parsed flags; a config built in code
    is held to the flags' ranges, and fit takes nothing else."""
    from kf_model.errors import InvalidArgumentError
    from kf_model.losses import IMBConfig
    from kf_model.training import (
        ArchitectureConfig,
        DataSourceConfig,
        DistillJobConfig,
        FactorizeJobConfig,
        TeacherJobConfig,
        TeacherSourceConfig,
        fit,
    )

    args = parse_args(FactorizeJob.parser(), ["--dataset", "dsprites", "--output-dir", "x", "--teacher", "t",
                                              "--beta", "0.5", "--ckn-width", "12", "--push-to-hub", "me/bank"],
                      required=FactorizeJob.required)
    config = FactorizeJob.config_class.from_args(args)
    assert isinstance(config, FactorizeJobConfig) and config.objective == IMBConfig(beta=0.5)
    assert (config.teacher.teacher, config.networks.ckn_width, config.push_to_hub) == ("t", 12, "me/bank")
    assert (config.run.output_dir, config.run.options["beta"], config.data.source.dataset) == ("x", 0.5, "dsprites")
    assert DistillJob.config_class is DistillJobConfig and TeacherJob.config_class is TeacherJobConfig

    data = DataConfig(DataSourceConfig("dsprites"))
    teacher = TeacherSourceConfig("t")
    refused = [
        (lambda: TeacherJobConfig(data, label_smoothing=1.0), "label-smoothing"),
        (lambda: TeacherJobConfig(data, backbone=ArchitectureConfig(width=0)), "--width"),
        (lambda: TeacherJobConfig(data, backbone=ArchitectureConfig(num_stages=2)), "--num-stages"),
        (lambda: TeacherJobConfig(data, backbone=ArchitectureConfig(arch="vgg")), "unknown architecture"),
        (lambda: TeacherJobConfig(data, backbone=ArchitectureConfig(width="8")), "must be a number"),
        (lambda: DistillJobConfig(data, teacher=teacher, student=ArchitectureConfig(width=8), kd_temperature=0),
         "kd-temperature"),
        (lambda: DistillJobConfig(data, teacher=teacher), "--match-factorization"),
        (lambda: DistillJobConfig(data, student=ArchitectureConfig(width=8)), "--teacher"),
        (lambda: FactorizeJobConfig(data, teacher=teacher, objective=IMBConfig(infomin="vib")), "--variational"),
        (lambda: FactorizeJobConfig(data), "--teacher"),
    ]
    for make, match in refused:
        with pytest.raises(InvalidArgumentError, match=match):
            make()
    with pytest.raises(KFError, match="FactorizeJobConfig"):  # a Namespace (or another job's config) is refused
        fit(FactorizeJob, args)
    with pytest.raises(KFError, match="output folder"):
        fit(TeacherJob, TeacherJobConfig(data))


def test_a_recipe_records_its_commands_without_this_machine_s_interpreter_path() -> None:
    import sys

    from kf_model.recipes import recorded_command

    command = [sys.executable, "train/factorize.py", "--out", "a b"]
    assert recorded_command(command) == "python train/factorize.py --out 'a b'"


def test_option_actions_lists_the_optional_arguments_by_destination() -> None:
    import argparse

    from kf_model.training.options import option_actions

    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--config")
    parser.add_argument("--cpu", action="store_true")
    actions = option_actions(parser)
    assert sorted(actions) == ["cpu", "max_steps"] and actions["max_steps"].option_strings == ["--max-steps"]


def test_a_recipe_deletes_nothing_it_did_not_make(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--dry-run only lists (a quick run's folder is removed on a real quick run only), and a finished recipe
    replaces only a shipped bank: a mistyped --assets-dir is refused before anything runs."""
    from kf_model.recipes import main as recipes

    notes = tmp_path / "runs" / "quick" / "dsprites" / "notes.txt"
    notes.parent.mkdir(parents=True)
    notes.write_text("mine")
    recipes(["dsprites", "--quick", "--dry-run", "--runs-dir", str(tmp_path / "runs")])
    assert notes.read_text() == "mine" and "factorize.py" in capsys.readouterr().out
    precious = tmp_path / "assets" / "dsprites" / "thesis.txt"
    precious.parent.mkdir(parents=True)
    precious.write_text("years of work")
    with pytest.raises(SystemExit, match=r"not a shipped bank.*nothing was run or replaced"):
        recipes(["dsprites", "--runs-dir", str(tmp_path / "runs"), "--assets-dir", str(tmp_path / "assets")])
    assert precious.read_text() == "years of work" and not (tmp_path / "runs" / "dsprites").exists()
