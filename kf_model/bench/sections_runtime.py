"""Section 9 of the benchmark: the app's runtimes and int8 (issue 22 items 2 and 3), CPU only.

- in-process ``/predict`` (``BankRegistry.predict``, every task) with ``runtime="onnxruntime"`` vs ``"torch"``;
- int8 (``export_onnx(..., quantize="int8")``) vs float32, both run by onnxruntime, at batch 1 and the throughput
  batch; on a trained bank of a built-in dataset also the test-split accuracy of both files, per task (the
  target: no task loses more than 0.5 points); on the photo bank the agreement of the two on the held-out
  photographs (target >= 99 %); on section 8's 224-px network the speed target: int8 >= 1.8x faster.
"""

from __future__ import annotations

import copy
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from kf_model.bench.app_process import example_image
from kf_model.bench.banks import BenchBank
from kf_model.bench.settings import Row, check_target, timed_rows
from kf_model.bench.timing import Device, interleaved, percentile
from kf_model.utils import ASSETS_DIR

if TYPE_CHECKING:
    from kf_model.bench.runner import Bench

SECTION = 9
INT8_SPEEDUP = 1.8  # int8 at least this much faster on the 224-px network (a time ratio <= 1 / 1.8)
INT8_MAX_DROP_PT = 0.5  # accuracy points a task may lose to int8 (test split)
INT8_MIN_AGREEMENT = 99.0  # % of (photo, task) answers int8 shares with float32 (label-free photo bank)
ACCURACY_IMAGES = 10_000  # test images per built-in bank (the whole Fashion-MNIST test split)
PHOTO_BANK = ASSETS_DIR / "factors" / "photo-everyday"
CPU = Device(torch.device("cpu"))


def session(path: Path, threads: int) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def runtimes(bench: Bench, bank: BenchBank, work: Path) -> None:
    """In-process /predict with each runtime, on one example image, every task of the bank."""
    from kf_model.serving import BankRegistry

    s = bench.settings
    folder = work / "runtime-banks"
    if not (folder / bank.key).exists():
        folder.mkdir(exist_ok=True)
        if bank.loaded:
            (folder / bank.key).symlink_to(bank.path.resolve(), target_is_directory=True)
        else:
            copy.deepcopy(bank.bank).to("cpu").save_pretrained(folder / bank.key)
    image, tasks = str(example_image(bank, work)), [t.name for t in bank.bank.tasks]
    registries = {name: BankRegistry(folder, allow_hub=False, device="cpu", runtime=name)
                  for name in ("onnxruntime", "torch")}
    onnx = registries["onnxruntime"]
    entry = onnx.get(bank.key)
    onnx.runtime.onnx_network(entry.runtime_id, entry.ensure(tasks), tasks)
    onnx.runtime.wait()
    answers = {name: registry.predict(image, bank.key, tasks) for name, registry in registries.items()}
    assert answers["onnxruntime"].runtime == "onnxruntime", onnx.runtime.failure(entry.runtime_id)
    worst = max(abs(p - answers["torch"].probabilities[task][label])
                for task, probs in answers["onnxruntime"].probabilities.items() for label, p in probs.items())
    times = interleaved({name: lambda r=registry: r.predict(image, bank.key, tasks)
                         for name, registry in registries.items()}, s.serving_requests * 2, s.warmup, CPU)
    for q in (50, 95):
        value, base = percentile(times["onnxruntime"], q), percentile(times["torch"], q)
        bench.add(Row(SECTION, f"in-process /predict p{q}, {len(tasks)} tasks, runtime onnxruntime vs torch", bank.key,
                      1000 * value, "ms", 1000 * base, "runtime torch", value / base, "time / baseline time",
                      note=f"BankRegistry.predict (image checks, preprocessing, network, familiarity); max |p "
                           f"onnxruntime - p torch| = {worst:.1e}; {len(times['torch'])} requests per side"))
    bench.checks.setdefault("runtime_max_abs_probability_diff", {})[bank.key] = worst


def int8(bench: Bench, bank: BenchBank, work: Path) -> None:
    """int8 vs float32 onnxruntime: speed at batch 1 and the throughput batch; accuracy on the test split."""
    from kf_model.data.calibration import calibration_images
    from kf_model.errors import DataNotFoundError

    s = bench.settings
    cpu_bank = copy.deepcopy(bank.bank).to("cpu")
    spec = cpu_bank.input_spec
    try:
        calibration, source = calibration_images(bank.dataset, spec), "held-out training images"
    except DataNotFoundError as error:
        calibration, source = torch.rand(64, spec.channels, spec.size, spec.size), f"random images ({error})"
    fp32 = cpu_bank.export_onnx(None, work / f"{bank.key}-fp32.onnx")
    quantized = cpu_bank.export_onnx(None, work / f"{bank.key}-int8.onnx", quantize="int8", calibration=calibration)
    sessions = {"int8": session(quantized, bench.args.threads), "fp32": session(fp32, bench.args.threads)}
    for batch, repeats in ((1, s.latency_repeats), (s.throughput_batch, s.throughput_repeats)):
        int8_speed_rows(bench, bank.key, sessions, spec, batch, repeats, note=f"calibrated on {source}")
    if bank.loaded and bank.dataset in ("dsprites", "fashion-mnist"):
        int8_accuracy_row(bench, bank, sessions, limit=ACCURACY_IMAGES if not bench.args.quick else 256)


def int8_speed_rows(bench: Bench, label: str, sessions: dict[str, Any], spec: Any, batch: int, repeats: int, *,
                    target: str | None = None, note: str = "") -> None:
    x = torch.rand(batch, spec.channels, spec.size, spec.size, generator=torch.Generator().manual_seed(batch))
    feed = {"image": x.numpy()}
    times = interleaved({name: lambda s=s: s.run(None, feed) for name, s in sessions.items()}, repeats,
                        bench.settings.warmup, CPU)
    what = f"batch {batch} throughput" if batch > 1 else "batch 1 latency"
    speedup = statistics.median(times["fp32"]) / statistics.median(times["int8"])
    bench.add(timed_rows(SECTION, label, f"int8 vs float32 (onnxruntime, static QDQ), {what}", times["int8"],
                         times["fp32"], baseline_name="float32", batch=batch, throughput=batch > 1, target=target,
                         note=f"int8 {speedup:.2f}x faster; {note}"))


def _answers(sessions: dict[str, Any], images: torch.Tensor, batch: int = 256) -> dict[str, list[np.ndarray]]:
    """Each session's argmax per output over ``images``, batch by batch."""
    answers: dict[str, list[list[np.ndarray]]] = {name: [] for name in sessions}
    for start in range(0, len(images), batch):
        feed = {"image": images[start:start + batch].numpy()}
        for name, s in sessions.items():
            answers[name].append([out.argmax(1) for out in s.run(None, feed)])
    return {name: [np.concatenate(parts) for parts in zip(*chunks)] for name, chunks in answers.items()}


def int8_accuracy_row(bench: Bench, bank: BenchBank, sessions: dict[str, Any], limit: int) -> None:
    """Test-split accuracy of the int8 and the float32 file, per task: the worst drop is the row."""
    from kf_model.data import DSPRITES_TASKS, FASHION_MNIST_TASKS, load_dataset

    test = load_dataset(bank.dataset, "test", limit=limit, seed=0)
    images, targets = test.get_batch(torch.arange(len(test)))
    columns = [t.name for t in (DSPRITES_TASKS if bank.dataset == "dsprites" else FASHION_MNIST_TASKS)]
    names = [o.name for o in sessions["fp32"].get_outputs()]
    answers = _answers(sessions, images.float())
    accuracy = {}
    for i, name in enumerate(names):
        truth = targets[:, columns.index(name)].numpy()
        accuracy[name] = {kind: round(100 * float((answers[kind][i] == truth).mean()), 3) for kind in sessions}
    drops = {name: round(a["fp32"] - a["int8"], 3) for name, a in accuracy.items()}
    worst = max(drops, key=drops.get)
    bench.checks.setdefault("int8_test_accuracy_pct", {})[bank.key] = accuracy
    bench.add(check_target(Row(
        SECTION, f"int8 test-accuracy drop vs float32, worst of {len(names)} tasks", bank.key, drops[worst], "pt",
        target=f"value <= {INT8_MAX_DROP_PT}",
        note=f"{len(test):,} test images; worst task {worst}: {accuracy[worst]['fp32']:.2f} % -> "
             f"{accuracy[worst]['int8']:.2f} %; drops (pt): " + ", ".join(f"{n} {d:+.2f}" for n, d in drops.items()))))


def real_int8(bench: Bench, label: str, bank: Any, work: Path) -> None:
    """Section 8's 224-px network: int8 vs float32 at batch 1 and the real-size batch (the >= 1.8x target)."""
    from kf_model.data.calibration import calibration_images
    from kf_model.errors import DataNotFoundError

    s = bench.settings
    cpu_bank = copy.deepcopy(bank).to("cpu")
    spec = cpu_bank.input_spec
    try:
        calibration, source = calibration_images(None, spec), "the calibration photographs"
    except DataNotFoundError:
        calibration, source = torch.rand(32, 3, spec.size, spec.size), "random images"
    fp32 = cpu_bank.export_onnx(None, work / "real-fp32.onnx")
    quantized = cpu_bank.export_onnx(None, work / "real-int8.onnx", quantize="int8", calibration=calibration)
    sessions = {"int8": session(quantized, bench.args.threads), "fp32": session(fp32, bench.args.threads)}
    for batch, repeats in ((1, 4 * s.real_repeats), (s.real_batch, 2 * s.real_repeats)):  # the targeted rows: more
        int8_speed_rows(bench, label, sessions, spec, batch, repeats, target=f"ratio <= {1 / INT8_SPEEDUP:.3f}",
                        note=f"calibrated on {source}; {_cpu_int8_note()}")


def photo_int8(bench: Bench, work: Path) -> None:
    """The photo bank (EfficientNet-Lite0 CKN, label-free): int8 vs float32 speed, and their agreement on the
    held-out photographs (calibrated on the calibration ones)."""
    from kf_model.bank import FactorBank
    from kf_model.data.calibration import calibration_images
    from kf_model.data.photos import offline_photos, open_photo
    from kf_model.data.preprocess import image_to_tensor

    if not (PHOTO_BANK / "factors.json").is_file():
        bench.notes.append(f"section 9: no photo bank at {PHOTO_BANK}: its int8 rows skipped")
        return
    bank = FactorBank.from_pretrained(PHOTO_BANK, device="cpu")
    spec = bank.input_spec
    held_out = offline_photos("photograph", "held-out")
    if not held_out:
        bench.notes.append("section 9: no held-out photographs installed (make photo-deps): photo int8 rows skipped")
        return
    fp32 = bank.export_onnx(None, work / "photo-fp32.onnx")
    quantized = bank.export_onnx(None, work / "photo-int8.onnx", quantize="int8",
                                 calibration=calibration_images(None, spec))
    sessions = {"int8": session(quantized, bench.args.threads), "fp32": session(fp32, bench.args.threads)}
    images = torch.cat([image_to_tensor(open_photo(photo), spec) for photo in held_out])
    answers = _answers(sessions, images)
    same = [float((a == b).mean()) for a, b in zip(answers["int8"], answers["fp32"])]
    agreement = 100 * statistics.mean(same)
    label = "photo-everyday"
    bench.add(check_target(Row(
        SECTION, f"int8 agreement with float32 on {len(held_out)} held-out photographs x {len(same)} tasks", label,
        agreement, "%", target=f"value >= {INT8_MIN_AGREEMENT:g}",
        note="calibrated on the calibration photographs (kf_model.data.calibration); answers = argmax per task")))
    for batch in (1, bench.settings.real_batch):
        int8_speed_rows(bench, label, sessions, spec, batch, bench.settings.real_repeats,
                        note=f"{spec.size}-px EfficientNet-Lite0 CKN + {len(bank.tsns)} TSNs; {_cpu_int8_note()}")


def _cpu_int8_note() -> str:
    """Whether this CPU has the int8 dot-product instructions that make int8 convolutions fast."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "CPU flags unknown"
    vnni = [f for f in ("avx512_vnni", "avx_vnni", "amx_int8") if f in flags.split()]
    return f"CPU has {', '.join(vnni)}" if vnni else "CPU without VNNI (AVX2 int8: u8*s8 multiply-add only)"
