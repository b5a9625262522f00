"""The GPU check: what must hold on a CUDA device. Skipped on machines without one (CI has none).

Run it where a GPU is lent, together with the GPU benchmark table:

    python -m pytest tests/test_gpu.py -q && python -m kf_model.bench --device cuda --skip-serving
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kf_model import FactorBank

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

BANKS = Path(__file__).resolve().parents[1] / "assets" / "factors"


@pytest.fixture(autouse=True)
def exact_float32():
    """TF32 matmuls would trade exactness for speed; the exactness checks need true float32."""
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


def held_out_images(bank: FactorBank, count: int = 256) -> torch.Tensor:
    from kf_model.data import load_dataset

    dataset = load_dataset(bank.manifest.dataset, "test", limit=count)
    return torch.stack([dataset[i][0] for i in range(len(dataset))])


@pytest.mark.parametrize("name", ["dsprites", "fashion-mnist"])
def test_bundled_bank_on_cuda_is_exact_and_matches_cpu(name: str) -> None:
    if name == "fashion-mnist":
        pytest.importorskip("kf_model.data")
    try:
        cpu_bank = FactorBank.from_pretrained(BANKS / name)
    except Exception as error:  # pragma: no cover - the bank is committed
        pytest.fail(f"bundled bank {name} does not load: {error}")
    try:
        images = held_out_images(cpu_bank)
    except Exception as error:  # Fashion-MNIST's Debian package may be absent on the GPU machine
        pytest.skip(f"no held-out data for {name} here: {error}")
    with torch.no_grad():
        cpu = cpu_bank.assemble()(images)
        gpu_bank = FactorBank.from_pretrained(BANKS / name, device="cuda")
        assembled = gpu_bank.assemble()
        gpu = assembled(images.cuda())
        for task in gpu_bank.tasks:
            alone = gpu_bank.factor(task.name)(images.cuda())
            assert (alone - gpu[task.name]).abs().max().item() <= 1e-5, task.name
            assert (gpu[task.name].cpu() - cpu[task.name]).abs().max().item() <= 1e-3, task.name
        with torch.autocast("cuda", dtype=torch.bfloat16):
            half = assembled(images.cuda())
    for task in gpu_bank.tasks:
        agreement = (half[task.name].argmax(-1) == gpu[task.name].argmax(-1)).float().mean().item()
        assert agreement >= 0.97, f"{task.name}: bf16 autocast agrees with float32 on only {agreement:.1%}"


def test_factorize_trains_on_cuda_with_bf16(tmp_path: Path) -> None:
    from kf_model.training import FactorizeJob, TeacherJob, run

    common = ["--dataset", "dsprites", "--limit", "512", "--batch-size", "64", "--mixed-precision", "bf16",
              "--log-every", "5"]
    run(TeacherJob, [*common, "--output-dir", str(tmp_path / "teacher"), "--max-steps", "20", "--width", "8"])
    result = run(FactorizeJob, [*common, "--teacher", str(tmp_path / "teacher"), "--output-dir",
                                str(tmp_path / "bank"), "--max-steps", "20", "--ckn-width", "8"])
    assert result is not None
    bank = FactorBank.from_pretrained(tmp_path / "bank", device="cuda")
    with torch.no_grad():
        logits = bank.assemble()(torch.rand(4, 1, 64, 64, device="cuda"))
    assert all(v.is_cuda and torch.isfinite(v).all() for v in logits.values())
