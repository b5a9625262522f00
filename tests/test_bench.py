"""The benchmark runs (``--quick``, no serving) and writes its JSON; the TSN stack's inference path is exact.

No timing is asserted: only that every figure and ratio is a positive finite number, that the targets are
evaluated, and that the stacked TSNs agree with the loop over TSNs within 1e-5.
"""

from __future__ import annotations

import json
import math
import platform
import re
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from kf_model.bench import GradioHTTP, Row, check_target, floor_row, percentile
from kf_model.bench.workloads import forward_flops
from kf_model.data.specs import TaskSpec
from kf_model.models import EncoderConfig, TaskSpecificNetwork
from kf_model.models.stacking import TSNStack
from tests.app_fixtures import make_bank, running_demo, write_images

ROOT = Path(__file__).resolve().parents[1]
ROW_KEYS = {"section", "name", "bank", "value", "unit", "baseline", "baseline_name", "ratio", "ratio_definition",
            "target", "passed", "note"}


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One quick run: a small bank loaded from a folder (dsprites) and one built from its recipe (fashion-mnist)."""
    tmp = tmp_path_factory.mktemp("bench")
    folder = make_bank("dsprites").save_pretrained(tmp / "banks" / "dsprites")
    out = tmp / "bench.json"
    run = subprocess.run([sys.executable, "-m", "kf_model.bench", "--quick", "--skip-serving", "--device", "cpu",
                          "--banks", str(folder), str(tmp / "missing" / "fashion-mnist"), "--out", str(out),
                          "--sections", "networks", "stack", "training", "onnx", "real-size"],  # 9: test_bench_runtime
                         cwd=ROOT, capture_output=True, text=True, timeout=420)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "| measurement |" in run.stdout and "targets met:" in run.stdout
    return json.loads(out.read_text())


def test_quick_run_writes_every_section_with_finite_ratios(result: dict) -> None:
    assert result["quick"] is True and result["errors"] == []
    assert {"cpu", "cpu_count", "torch_threads", "device", "device_name", "torch", "load_average_start",
            "load_average_end"} <= set(result["machine"])
    assert result["machine"]["torch_threads"] == 1 and result["machine"]["device"] == "cpu"
    kept = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"  # --malloc keep, the default
    assert result["machine"]["malloc"] == ("glibc, freed memory kept (--malloc keep)" if kept else "default")
    assert result["banks"]["dsprites"]["weights"] == "from the bank folder"
    assert result["banks"]["fashion-mnist"]["weights"].startswith("untrained")
    rows = result["rows"]
    assert rows and all(set(row) == ROW_KEYS for row in rows)
    for row in rows:
        for key in ("value", "baseline", "ratio"):
            assert isinstance(row[key], float) and math.isfinite(row[key]) and row[key] > 0, (row["name"], key)
    sections = {(row["section"], row["bank"]) for row in rows}
    for bank in ("dsprites", "fashion-mnist"):
        assert {(1, bank), (2, bank), (3, bank), (4, bank)} <= sections
    assert (6, "dsprites") in sections and not any(row["section"] == 5 for row in rows)
    assert {(7, "dsprites"), (7, "fashion-mnist"), (8, "test_resnet->test_resnet @64")} <= sections
    for bank in ("dsprites", "fashion-mnist"):  # the fair comparison and each pinned path of the stack
        names = {row["name"] for row in rows if row["bank"] == bank}
        assert any("vs teacher with the same inference rewrites" in name for name in names)
        assert any("vs plain teacher (unfair" in name for name in names)
        assert {f"stack forced to {path} vs stack as shipped, batch 8 throughput"
                for path in ("onednn", "grouped", "per-task")} <= names
    real = {row["name"] for row in rows if row["section"] == 8}
    assert any(name.startswith("KF training step vs KD") for name in real)
    assert any(name.startswith("JPEG image-folder loader") for name in real)
    assert any("serving" in note and "skipped" in note for note in result["notes"])
    assert any("untrained" in note for note in result["notes"])


def test_targets_are_evaluated(result: dict) -> None:
    targeted = {(row["section"], row["bank"]): row for row in result["rows"] if row["target"]}
    assert {section for section, _ in targeted} == {1, 2, 3, 4, 6, 8}
    flops = result["checks"]["assembled_vs_teacher_flop_ratio"]
    assert set(flops) == {"dsprites", "fashion-mnist", "test_resnet->test_resnet @64"}
    for row in result["rows"]:  # the target follows the FLOP ratio
        if row["section"] == 1:  # ... against the teacher given the same rewrites; the plain teacher's rows: none
            fair = "same inference rewrites" in row["name"]
            assert row["target"] == (f"ratio <= {flops[row['bank']] + 0.05:.2f}" if fair else None), row["name"]
        if row["section"] == 8 and "vs teacher," in row["name"]:
            assert row["target"] == f"ratio <= {max(1.15, flops[row['bank']] + 0.05):.2f}"
    assert set(result["checks"]["fair_teacher_vs_teacher_max_abs_diff"]) == {"dsprites", "fashion-mnist"}
    for row in targeted.values():
        assert isinstance(row["passed"], bool)
    summary = result["summary"]
    assert summary["targets"] == sum(1 for row in result["rows"] if row["target"])
    assert summary["passed"] + len(summary["failed"]) == summary["targets"]
    separate = [row for row in result["rows"] if row["section"] == 2 and row["bank"] == "fashion-mnist"]
    assert {"5 factor networks, same rewrites", "10 factor networks, same rewrites", "5 plain factor networks",
            "10 plain factor networks"} == {row["baseline_name"] for row in separate}
    assert all((row["target"] is None) == ("plain" in row["baseline_name"]) for row in separate)


def test_onnx_rows_agree_with_torch(result: dict) -> None:
    onnx_rows = [row for row in result["rows"] if row["section"] == 7]
    assert len(onnx_rows) == 8  # per bank and batch: vs torch, and vs the teacher on onnxruntime too
    for row in onnx_rows:
        assert float(re.search(r"max \|onnx - torch\| = ([^;),]+)", row["note"]).group(1)) <= 1e-4, row["note"]
    assert sum("vs teacher with the same inference rewrites" in row["name"] and row["target"] is None
               for row in onnx_rows) == 4  # untargeted


def test_stacked_tsns_equal_the_loop_within_1e_5(result: dict) -> None:
    diffs = result["checks"]["stack_vs_loop_max_abs_diff"]
    assert set(diffs) == {"dsprites", "fashion-mnist"}
    for per_variant in diffs.values():
        assert {"stack", "stack, channels_last", "vmap over the TSNs"} <= set(per_variant)
        assert all(0 <= diff <= 1e-5 for diff in per_variant.values()), per_variant


def test_percentile_and_targets() -> None:
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([0.0, 10.0], 95) == pytest.approx(9.5)
    row = check_target(Row(1, "x", None, 2.0, "ms", 1.0, "y", 2.0, "", "ratio <= 1.5"))
    assert row.passed is False
    assert check_target(Row(6, "x", None, 5.0, "img/s", 1.0, "y", 5.0, "", "ratio >= 1")).passed is True
    assert check_target(Row(5, "x", None, 700.0, "MB", target="value <= 1536")).passed is True
    assert check_target(Row(5, "x", None, 7.0, "ms")).passed is None


def test_flops_are_counted_on_the_path_the_counter_sees() -> None:
    """The assembled network's inference runs oneDNN kernels on small CPU batches; its FLOPs must still count
    the CKN and every TSN (the first version counted almost nothing: a FLOP ratio of 0.07)."""
    bank = make_bank("dsprites")
    names = [t.name for t in bank.tasks]
    x = torch.rand(1, 1, 64, 64)
    every, one, ckn = (forward_flops(bank.assemble(names).eval(), x), forward_flops(bank.assemble(names[:1]).eval(), x),
                       forward_flops(bank.ckn.eval(), x))
    assert every > one > ckn > 0


def test_the_floor_row_allows_the_noop_floor_plus_twice_the_in_process_predict() -> None:
    times = {"http": [0.030, 0.020, 0.025], "floor": [0.010, 0.012, 0.008], "in-process": [0.004, 0.005, 0.006]}
    row = floor_row("bank", 3, times, 3)
    assert row.value == pytest.approx(25.0) and row.baseline == pytest.approx(10.0 + 2 * 5.0)
    assert row.ratio == pytest.approx(25 / 20) and row.passed is False
    times["http"] = [0.019, 0.020, 0.021]
    assert floor_row("bank", 3, times, 3).passed is True


@pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")  # pandas deprecations inside gradio
def test_the_floor_endpoint_is_the_predict_path_doing_nothing(tmp_path: Path) -> None:
    """``/noop`` (``KF_BENCH_FLOOR=1`` only) takes /predict's inputs over the bench's HTTP client and answers {}."""
    image = write_images(tmp_path / "images")["grey.png"]
    with running_demo(tmp_path / "banks", floor_endpoint=True) as (url, _):
        http = GradioHTTP(url)
        try:
            assert http.predict(str(image), "dsprites", ["shape"], "noop") == {}
            assert set(http.predict(str(image), "dsprites", ["shape"])) == {"shape", "_input"}
        finally:
            http.close()


# ----------------------------------------------------------------------------- the stack's inference path

def make_stack(variational: bool = False, seed: int = 0) -> tuple[TSNStack, list[TaskSpecificNetwork]]:
    torch.manual_seed(seed)
    encoder = asdict(EncoderConfig(in_channels=1, widths=[4, 8, 8], coord_channels=True))
    tsns = [TaskSpecificNetwork(TaskSpec(f"task{i}", tuple(f"c{j}" for j in range(2 + i)), "").to_dict(), encoder, 16,
                                "fp", variational) for i in range(4)]
    with torch.no_grad():
        for tsn in tsns:
            for layer in tsn.modules():
                if isinstance(layer, torch.nn.BatchNorm2d):
                    layer.running_mean.uniform_(-1, 1)
                    layer.running_var.uniform_(0.5, 2)
                    layer.weight.uniform_(0.5, 1.5)
                    layer.bias.uniform_(-0.5, 0.5)
    tsns = [t.eval() for t in tsns]
    return TSNStack(tsns).eval(), tsns


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert list(a) == list(b)
    return max(float((a[name] - b[name]).abs().max()) for name in a)


@pytest.mark.parametrize("variational", [False, True])
def test_fused_stack_matches_separate_tsns_and_the_unfused_stack(variational: bool) -> None:
    stack, tsns = make_stack(variational)
    fused = TSNStack(tsns).fuse_for_inference()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    x, z = torch.rand(5, 1, 28, 28), torch.rand(5, 16)
    with torch.inference_mode():
        fast = fused(x, z)
        separate = {t.task.name: t(x, z).logits for t in tsns}
        unfused = stack(x, z)
    assert max_diff(fast.logits, separate) <= 1e-5
    assert max_diff(fast.logits, unfused.logits) <= 1e-5
    assert fast.z.shape == (5, 4, 16) and (fast.mu is None) == (not variational)


@pytest.mark.parametrize("variational", [False, True])
def test_the_joint_heads_of_a_fused_stack_match_separate_tsns(variational: bool) -> None:
    """``logits`` of a fused stack: all heads as two products through blockdiag(W_i^T H_i^T), within 1e-5."""
    _, tsns = make_stack(variational)
    fused = TSNStack(tsns).fuse_for_inference()
    for batch in (1, 5):
        x, z = torch.rand(batch, 1, 28, 28), torch.rand(batch, 16)
        with torch.inference_mode():
            joint = fused.logits(x, z)
            separate = {t.task.name: t(x, z).logits for t in tsns}
        assert max_diff(joint, separate) <= 1e-5
        assert [tuple(v.shape) for v in joint.values()] == [(batch, t.task.num_classes) for t in tsns]


def test_fused_stack_is_inference_only() -> None:
    _, tsns = make_stack()
    fused = TSNStack(tsns).fuse_for_inference()
    with pytest.raises(RuntimeError, match="inference"):
        fused.train()
    with pytest.raises(RuntimeError, match="fused"):
        fused.unstack()


def test_the_per_task_pass_of_a_large_batch_equals_the_grouped_one() -> None:
    _, tsns = make_stack()
    fused = TSNStack(tsns).fuse_for_inference()
    x, z = torch.rand(6, 1, 28, 28), torch.rand(6, 16)
    with torch.inference_mode():
        fused.loop_from_pixels = None
        grouped = fused(x, z)
        fused.loop_from_pixels = 6 * 28 * 28  # this batch is "large": the per-task pass runs
        per_task = fused(x, z)
        separate = {t.task.name: t(x, z).logits for t in tsns}
    assert max_diff(per_task.logits, grouped.logits) <= 1e-5
    assert max_diff(per_task.logits, separate) <= 1e-5


def test_the_readme_performance_table_is_the_recorded_run() -> None:
    """README's table is kf_model.bench.table of docs/bench.json (a copy of runs/bench.json from `make bench`)."""
    from kf_model.bench import table

    recorded = json.loads((ROOT / "docs" / "bench.json").read_text())
    assert recorded["quick"] is False and recorded["errors"] == []
    assert len(recorded["commit"].removesuffix("-dirty")) == 40  # the commit measured, recorded at the start
    readme = (ROOT / "README.md").read_text()
    assert table(recorded) in readme
    assert f"**{recorded['summary']['passed']} of {recorded['summary']['targets']} targets met.**" in readme


def _paragraph(readme: str, start: str) -> str:
    """The paragraph that begins with ``start``, line breaks as spaces (wrapping may split a figure's words)."""
    return " ".join(readme[readme.index(start):].split("\n\n")[0].split())


def test_the_readme_prose_on_the_recorded_run_quotes_its_json() -> None:
    """The figures of the paragraphs on what the run missed and on int8 are docs/bench.json's."""
    recorded = json.loads((ROOT / "docs" / "bench.json").read_text())
    readme = (ROOT / "README.md").read_text()

    def row(bank: str | None, words: str, section: int | None = None) -> dict:
        found = [r for r in recorded["rows"] if r["bank"] == bank and words in r["name"]
                 and (r["section"] == section if section else r["section"] != 7)]
        assert len(found) == 1, (bank, words, [r["name"] for r in found])
        return found[0]

    missed = _paragraph(readme, "**Missed in this run.**")
    flops = recorded["checks"]["assembled_vs_teacher_flop_ratio"]
    for bank in ("dsprites", "fashion-mnist"):
        for batch in ("batch 1 latency", "batch 256 throughput"):
            assert f"{row(bank, f'vs teacher with the same inference rewrites, {batch}')['ratio']:.2f}" in missed
        assert f"{flops[bank]:.2f}" in missed and f"{flops[bank] + 0.05:.2f}" in missed
    clients = row('dsprites', '/predict throughput, 16 concurrent HTTP clients')
    assert f"{clients['ratio']:.2f}" in missed
    app_cpu = re.findall(r"app CPU (\d+) ms/request", clients["note"])  # at 16 clients, then at 1
    assert f"and {app_cpu[1]} ms of the app's CPU" in missed and f"spending {app_cpu[0]} ms of the app's CPU" in missed
    assert f"a p95 of {row('dsprites', '/predict p95 at 16 concurrent HTTP clients')['value']:,.0f} ms" in missed
    assert f"peak memory {row(None, 'peak memory of the app')['value']:,.0f} MB" in missed
    assert f"plateau ratio of {row(None, 'memory plateau')['ratio']:.2f}" in missed
    words = " ".join(missed.split())  # whether each row was met, as the run says
    for bank, name in (("dsprites", "dSprites"), ("fashion-mnist", "Fashion-MNIST")):
        batch256 = row(bank, "vs teacher with the same inference rewrites, batch 256")
        assert f"{batch256['ratio']:.2f} on {name} ({'met' if batch256['passed'] else 'missed'}" in words
    assert f"(target 1.5: {'met' if clients['passed'] else 'missed'} in this run" in words
    floor = row("dsprites", "/noop (Gradio's floor) throughput, 16 concurrent HTTP clients")
    assert f"no network, reads {floor['ratio']:.2f} at 16 clients" in words
    for bank in ("dsprites", "fashion-mnist"):  # both networks compiled whole (section 1's untargeted rows)
        assert f"{row(bank, 'compiled whole (TorchScript + oneDNN Graph)')['ratio']:.2f}" in missed
        assert f"{row(bank, 'assembled compiled whole vs as shipped, batch 1')['ratio']:.2f}" in missed
    for bank in ("dsprites", "fashion-mnist"):  # the same comparison on onnxruntime (section 7)
        for batch in ("batch 1 latency", "batch 256 throughput"):
            on_onnx = row(bank, f"vs teacher with the same inference rewrites, {batch}", section=7)
            assert f"{on_onnx['ratio']:.2f}" in missed, (bank, batch)
    photo = "photo-everyday: efficientnet_lite0 @224"
    photo_paragraph = _paragraph(readme, "**The photograph bank at batch 32**")
    for words in ("same BatchNorm folding and passes, batch 32", "same BatchNorm folding and passes, batch 1",
                  "plain teacher (unfair: BatchNorm unfolded, one pass), batch 32",
                  "CKN's BatchNorm not folded vs as shipped, batch 1",
                  "CKN's BatchNorm not folded vs as shipped, batch 32"):
        assert f"{row(photo, words)['ratio']:.2f}" in photo_paragraph, words
    passes = row(photo, "same BatchNorm folding and passes, batch 32")
    assert f"{passes['value']:.0f} img/s against {passes['baseline']:.0f}" in photo_paragraph
    assert f"target {flops[photo] + 0.05:.2f}" in photo_paragraph and ("met in this one" in photo_paragraph) == passes[
        "passed"]
    int8 = _paragraph(readme, "int8 keeps every task within half a point")
    for bank in ("resnet50->resnet18 @224", "photo-everyday"):
        for batch in ("batch 1 latency", "batch 8 throughput"):
            assert f"{row(bank, f'int8 vs float32 (onnxruntime, static QDQ), {batch}')['ratio']:.2f}" in int8


# ----------------------------------------------------------------------------- concurrent clients (section 5)

def test_concurrent_clients_each_make_their_calls_and_failures_are_reported() -> None:
    import threading

    from kf_model.bench.processes import process_cpu_seconds
    from kf_model.bench.sections_concurrency import run_clients

    seen: list[str] = []
    lock = threading.Lock()

    def call() -> None:
        with lock:
            seen.append(threading.current_thread().name)

    wall, latencies = run_clients([call] * 4, 3)
    assert len(latencies) == 12 and len(seen) == 12 and len(set(seen)) == 4 and wall >= max(latencies) >= 0

    def broken() -> None:
        raise ValueError("refused")

    with pytest.raises(RuntimeError, match="1 of 2 concurrent clients failed: ValueError"):
        run_clients([call, broken], 2)
    import os

    assert process_cpu_seconds(os.getpid()) > 0 or not Path("/proc").is_dir()


def test_processes_memory_counts_private_pages_of_each_and_shared_pages_once() -> None:
    from kf_model.bench.processes import Memory, combined_mb

    app = Memory(private_kb=400 * 1024, shared_kb=300 * 1024)
    worker = Memory(private_kb=450 * 1024, shared_kb=290 * 1024)
    assert combined_mb([app, worker]) == 400 + 450 + 300
    assert combined_mb([app]) == 700
    assert combined_mb([]) != combined_mb([])  # NaN: nothing measured


def test_the_app_memory_counts_its_children() -> None:
    import os
    import subprocess
    import sys

    from kf_model.bench.processes import app_memory_mb, child_pids, process_memory

    if not Path("/proc").is_dir():
        pytest.skip("reads /proc")
    alone = app_memory_mb(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import sys, time; b = bytearray(200 * 2**20); b[::4096] = "
                              "b'x' * len(b[::4096]); print(flush=True); time.sleep(30)"], stdout=subprocess.PIPE)
    try:
        child.stdout.readline()  # its 200 MB are written
        assert child.pid in child_pids(os.getpid())
        mine = process_memory(os.getpid())
        assert mine is not None and mine.private_kb > 0
        assert app_memory_mb(os.getpid()) >= alone + 190
    finally:
        child.kill()
        child.wait()


def test_the_app_cpu_of_the_concurrency_rows_counts_its_worker_processes() -> None:
    import os
    import subprocess
    import sys
    import time

    from kf_model.bench.processes import child_pids, process_cpu_seconds, tree_cpu_seconds

    if not Path("/proc").is_dir():
        pytest.skip("reads /proc")
    child = subprocess.Popen([sys.executable, "-c", "import time; sum(range(10**7)); time.sleep(30)"])
    try:
        deadline = time.monotonic() + 20
        while process_cpu_seconds(child.pid) < 0.1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process_cpu_seconds(child.pid) >= 0.1
        assert child.pid in child_pids(os.getpid())
        # Read this process first: its own CPU only grows (other tests' threads may still run), so the tree read
        # after it holds at least that much plus the child's 0.1 s.
        mine_before = process_cpu_seconds(os.getpid())
        assert tree_cpu_seconds(os.getpid()) >= mine_before + 0.1
    finally:
        child.kill()
        child.wait()


def test_the_bench_refuses_an_out_path_and_a_thread_count_before_it_runs(tmp_path: Path, capsys) -> None:
    """The results are written after the whole bench (7 minutes): a path they cannot go to, or 10^8 threads, is
    refused before it starts."""
    from kf_model.bench.runner import parse_arguments

    (tmp_path / "afile").write_text("x")
    for argv, message in ((["--out", str(tmp_path / "afile" / "b.json")], "is a file, not a folder"),
                          (["--out", str(tmp_path)], "a folder, not a file name"),
                          (["--threads", "100000000"], "--threads must be from 1 to 1024")):
        with pytest.raises(SystemExit):
            parse_arguments(argv)
        assert message in capsys.readouterr().err
    assert parse_arguments(["--out", str(tmp_path / "new" / "b.json")]).out == str(tmp_path / "new" / "b.json")
    assert not (tmp_path / "new").exists()


@pytest.mark.filterwarnings("ignore:.*deprecated:FutureWarning")
def test_a_network_compiled_whole_gives_its_answers_or_none_without_torch_jit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Section 1's compiled rows (bench/graph_mode.py): the graph answers as the eager network does, for other
    images of the traced size too; a torch without oneDNN Graph in torch.jit gives None (the rows are skipped)."""
    from kf_model.bench.graph_mode import compiled_whole
    from tests.test_growing import make_bank

    bank = make_bank()
    network = bank.assemble()
    spec = bank.input_spec
    example, other = (torch.rand(1, spec.channels, spec.size, spec.size) for _ in range(2))
    graph = compiled_whole(network, example)
    assert graph is not None
    with torch.inference_mode():
        for x in (example, other):
            assert max_diff(graph(x), network(x)) <= 1e-5
    monkeypatch.delattr(torch.jit, "enable_onednn_fusion")
    assert compiled_whole(network, example) is None
