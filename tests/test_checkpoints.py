"""Checkpoints survive a kill during a save, damaged ones are refused by name (kf_model.training.checkpoints).

The kill test runs train/factorize.py in a subprocess that SIGKILLs itself inside a save (the
KF_TEST_KILL_DURING_SAVE hook: after the files are written, before the manifest and the rename), then resumes
with --resume latest and compares the bank's weight files byte for byte with an uninterrupted run.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kf_model.errors import KFError
from kf_model.training import FactorizeJob, TeacherJob, run
from kf_model.training.checkpoints import KILL_HOOK, MANIFEST, CheckpointError, resolve_resume
from tests.test_training import TINY_FACTORS, common, make_teacher

ROOT = Path(__file__).resolve().parents[1]
BANK_WEIGHTS = ["ckn"] + [f"tsn/{t}" for t in ("shape", "scale", "orientation", "pos_x", "pos_y")]


@pytest.fixture
def one_thread():
    """--num-threads 1 in-process, as in the subprocess (same kernels, same bits); restored afterwards."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def listing(output_dir: Path) -> list[str]:
    return sorted(p.name for p in (output_dir / "checkpoints").iterdir())


def test_a_kill_during_a_save_resumes_to_the_same_weights(tmp_path: Path, one_thread,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """6 steps, a checkpoint every 2, only 1 kept. The run killed while saving checkpoint_1 (step 4) keeps
    checkpoint_0 (old checkpoints go only once the new one is complete) and resumes from it to the same bytes.
    Variational TSNs draw noise every step: the RNG states come back too."""
    teacher = make_teacher(tmp_path / "teacher")

    def args(name: str, *extra: str) -> list[str]:
        return common(tmp_path / name, "--teacher", str(teacher), *TINY_FACTORS, "--coord-channels",
                      "--variational", "--infomin", "vib", "--checkpoint-every", "2",
                      "--checkpoints-total-limit", "1", "--num-threads", "1", *extra, limit=48)

    run(FactorizeJob, args("once"))
    env = dict(os.environ, PYTHONPATH=str(ROOT), **{KILL_HOOK: "1"})
    killed = subprocess.run([sys.executable, "train/factorize.py", *args("twice")], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    twice = tmp_path / "twice"
    assert listing(twice) == ["checkpoint_0", "checkpoint_1.incomplete"]
    assert not (twice / "checkpoints" / "checkpoint_1.incomplete" / MANIFEST).exists()
    assert not (twice / "factors.json").exists()

    capsys.readouterr()
    resumed = run(FactorizeJob, args("twice", "--resume", "latest"))
    out = capsys.readouterr().out
    assert "skipped" in out and "checkpoint_1.incomplete" in out, out
    assert resumed.summary["resumed_from"].endswith("checkpoint_0") and resumed.step == 6
    assert listing(twice) == ["checkpoint_3"]  # numbering goes on after the unfinished checkpoint_1

    for name in BANK_WEIGHTS:
        once = (tmp_path / "once" / name / "model.safetensors").read_bytes()
        assert (twice / name / "model.safetensors").read_bytes() == once, name


# ----------------------------------------------------------------------------- damaged checkpoints

TEACHER = ["--width", "4", "--num-stages", "3", "--stem-stride", "2", "--checkpoint-every", "2"]


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A teacher run of 4 steps with checkpoint_0 (step 2) and checkpoint_1 (step 4)."""
    out = tmp_path_factory.mktemp("run")
    run(TeacherJob, common(out, *TEACHER, steps=4, limit=32))
    assert listing(out) == ["checkpoint_0", "checkpoint_1"]
    return out


@pytest.fixture
def copy(checkpointed: Path, tmp_path: Path) -> Path:
    shutil.copytree(checkpointed, tmp_path / "run")
    return tmp_path / "run"


def resume(output_dir: Path, target: str = "latest"):
    return run(TeacherJob, common(output_dir, *TEACHER, "--resume", target, steps=4, limit=32))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage", ["model.safetensors", "optimizer.bin", "random_states_0.pkl"])
def test_a_damaged_checkpoint_names_the_file_and_the_intact_one(copy: Path, damage: str) -> None:
    path = copy / "checkpoints" / "checkpoint_1" / damage
    if damage == "random_states_0.pkl":
        path.unlink()  # Accelerate alone would resume without it, silently no longer exact
    else:
        truncate(path)
    intact = copy / "checkpoints" / "checkpoint_0"
    expected = rf"{re.escape(damage)} .*resume from the intact {re.escape(str(intact))}"
    for target in ("latest", str(copy / "checkpoints" / "checkpoint_1")):
        with pytest.raises(CheckpointError, match=expected):
            resume(copy, target)
    assert resume(copy, str(intact)).summary["resumed_from"] == str(intact)


def test_no_intact_checkpoint_left(copy: Path) -> None:
    for name in ("checkpoint_0", "checkpoint_1"):
        truncate(copy / "checkpoints" / name / "model.safetensors")
    with pytest.raises(KFError, match="no intact checkpoint is left: start afresh"):
        resume(copy)


def test_latest_skips_an_unfinished_checkpoint_and_says_so(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An empty checkpoint_2 (what a kill inside Accelerate's own save_state left) is passed over."""
    (copy / "checkpoints" / "checkpoint_2").mkdir()
    capsys.readouterr()
    result = resume(copy)
    assert result.summary["resumed_from"] == str(copy / "checkpoints" / "checkpoint_1")
    out = capsys.readouterr().out
    assert f"skipped {copy / 'checkpoints' / 'checkpoint_2'} (no {MANIFEST}" in out, out
    with pytest.raises(CheckpointError, match=f"no {MANIFEST}"):  # and is refused when named
        resume(copy, str(copy / "checkpoints" / "checkpoint_2"))


def test_a_missing_random_state_of_another_process_is_refused(checkpointed: Path) -> None:
    """A checkpoint of 1 process holds no RNG state for process 1 of 2: resuming it would not be exact."""
    folder, notes = resolve_resume("latest", checkpointed)
    assert folder.name == "checkpoint_1" and notes == []
    with pytest.raises(CheckpointError, match=r"written by 1 process.*no random state for process 1"):
        resolve_resume("latest", checkpointed, num_processes=2, process_index=1)


def test_resume_with_other_options_is_a_clean_error(copy: Path) -> None:
    with pytest.raises(CheckpointError, match="other options"):
        run(TeacherJob, common(copy, *TEACHER, "--width", "8", "--resume", "latest", steps=4, limit=32))
