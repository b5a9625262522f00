"""Two real processes (gloo on CPU): factorization stays in sync and evaluation counts every sample once.

The test launches *this file* with ``accelerate launch --multi_gpu --num_processes 2`` and
``ACCELERATE_USE_CPU=1`` (a real 2-process gloo group on a CPU-only machine; ``accelerate launch --cpu
--num_processes 2`` would silently run a single process, so each rank also reports the world size it saw).
Each rank runs ``train/factorize.py``'s loop in-process and writes a hash of its trained weights, then runs
the distributed evaluation loop on 101 samples in batches of 8.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NUM_SAMPLES, EVAL_BATCH = 101, 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def state_hash(module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def worker(out_dir: str, teacher_dir: str) -> None:
    """Runs in each launched process."""
    import torch
    from torch.utils.data import TensorDataset

    from kf_model.training import FactorizeJob, collect_predictions, run

    torch.set_num_threads(1)  # two processes share two cores
    result = run(FactorizeJob, [
        "--dataset", "dsprites", "--limit", "64", "--batch-size", "8", "--max-steps", "4", "--warmup-steps", "1",
        "--teacher", teacher_dir, "--ckn-width", "4", "--ckn-stem-stride", "2", "--tsn-widths", "4", "4",
        "--tsn-strides", "4", "4", "--coord-channels", "--val-size", str(NUM_SAMPLES),
        "--eval-batch-size", str(EVAL_BATCH), "--checkpoint-every", "2", "--checkpoints-total-limit", "1",
        "--cpu", "--output-dir", f"{out_dir}/bank",
    ])

    # The evaluation loop alone, on samples whose target is their own index: is each one seen exactly once?
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    samples = TensorDataset(torch.zeros(NUM_SAMPLES, 1, 4, 4), torch.arange(NUM_SAMPLES).unsqueeze(1))
    predictions = collect_predictions(accelerator, lambda x: {"id": torch.zeros(len(x), 2)}, samples,
                                      batch_size=EVAL_BATCH)
    report = {
        "world_size": accelerator.num_processes, "rank": accelerator.process_index,
        "weights": state_hash(result.model), "steps": result.step,
        "validation_samples": result.summary["validation"]["samples"],
        "gathered_ids": predictions.targets[:, 0].tolist(),
        "local_batches": len(accelerator.prepare_data_loader(
            torch.utils.data.DataLoader(samples, batch_size=EVAL_BATCH))),
    }
    Path(out_dir, f"rank{accelerator.process_index}.json").write_text(json.dumps(report))


@pytest.mark.slow
def test_factorize_two_processes_stay_in_sync(tmp_path: Path) -> None:
    from tests.test_training import make_teacher

    teacher_dir = make_teacher(tmp_path / "teacher", "dsprites")
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), __file__, str(tmp_path), str(teacher_dir)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]

    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["world_size"] for r in reports] == [2, 2], "not a real 2-process run"
    assert [r["rank"] for r in reports] == [0, 1]
    assert reports[0]["steps"] == reports[1]["steps"] == 4
    assert reports[0]["weights"] == reports[1]["weights"], "the two ranks ended with different weights"
    # 101 samples in batches of 8 over 2 ranks: 7 batches each (the last one padded), gathered back to 101.
    assert reports[0]["local_batches"] == 7
    for report in reports:
        assert report["validation_samples"] == NUM_SAMPLES
        assert sorted(report["gathered_ids"]) == list(range(NUM_SAMPLES)), "a sample was dropped or counted twice"
    # The main process wrote the bank, and it holds exactly the weights both ranks trained.
    from kf_model.bank import FactorBank
    from kf_model.models.factor import AssembledNetwork

    # Checkpoints: both ranks' RNG states are in the one the main process completed, renamed and kept.
    checkpoints = sorted(p.name for p in (tmp_path / "bank" / "checkpoints").iterdir())
    assert checkpoints == ["checkpoint_1"], checkpoints
    manifest = json.loads((tmp_path / "bank" / "checkpoints" / "checkpoint_1" / "checkpoint.json").read_text())
    assert manifest["world_size"] == 2 and manifest["step"] == 4
    assert {"random_states_0.pkl", "random_states_1.pkl", "model.safetensors"} <= set(manifest["files"])

    bank = FactorBank.from_pretrained(tmp_path / "bank")
    assert json.loads((tmp_path / "bank" / "training.json").read_text())["world_size"] == 2
    trained_layout = AssembledNetwork(bank.ckn, list(bank.tsns.values()))  # as trained (assemble() folds BatchNorm)
    assert state_hash(trained_layout) == reports[0]["weights"]


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    worker(sys.argv[1], sys.argv[2])
