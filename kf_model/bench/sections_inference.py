"""Sections 1-3 and 7 of the benchmark: the assembled network against its baselines, the TSN stack, ONNX."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from kf_model.bench.banks import BenchBank
from kf_model.bench.fair_teacher import LogitsOnlyTeacher, export_teacher_onnx
from kf_model.bench.graph_mode import compiled_whole
from kf_model.bench.settings import (
    EQUALITY_ATOL,
    SEPARATE_TASKS,
    STACK_BATCHES,
    STACK_TASKS,
    timed_rows,
)
from kf_model.bench.timing import Device, interleaved, no_tf32
from kf_model.bench.workloads import (
    einsum_stack_logits,
    forward_flops,
    randomize_batchnorm,
    vmapped_tsns,
)
from kf_model.models.factor import AssembledNetwork

if TYPE_CHECKING:
    from kf_model.bench.runner import Bench


def networks(bench: Bench, bank: BenchBank) -> None:
    """Section 1: the assembled network vs its teacher given the same inference rewrites (targeted) and vs the
    plain teacher (untargeted); section 2: vs k separate factor networks, each given the same rewrites."""
    s, device = bench.settings, bench.device
    bank.bank.to(device.device)
    teacher = bank.teacher.to(device.device).eval()
    fair_teacher = LogitsOnlyTeacher(teacher).to(device.device).eval()
    assembled = bank.bank.assemble().eval()
    k = len(bank.bank.tasks)
    flop_ratio = assembly_flop_ratio(bank, bench.images(bank, 1))
    bench.checks.setdefault("assembled_vs_teacher_flop_ratio", {})[bank.key] = round(flop_ratio, 4)
    limit = flop_ratio + 0.05  # the time cannot beat the arithmetic: target the FLOP ratio + 0.05
    x = bench.images(bank, 2)
    with torch.inference_mode(), no_tf32():
        reference, fair = teacher(x).logits, fair_teacher(x)
    worst = max(float((fair[name].float() - reference[name].float()).abs().max()) for name in reference)
    bench.checks.setdefault("fair_teacher_vs_teacher_max_abs_diff", {})[bank.key] = worst
    assert worst <= EQUALITY_ATOL, f"{bank.key}: the rewritten teacher differs from the teacher by {worst:.1e}"
    for batch, repeats, throughput in ((1, s.latency_repeats, False),
                                       (s.throughput_batch, s.throughput_repeats, True)):
        x = bench.images(bank, batch)
        times = interleaved({"assembled": bench.inference(lambda x=x: assembled(x)),
                             "teacher": bench.inference(lambda x=x: teacher(x)),
                             "fair teacher": bench.inference(lambda x=x: fair_teacher(x))},
                            repeats, s.warmup, device)
        what = f"batch {batch} throughput" if throughput else "batch 1 latency"
        bench.add(timed_rows(1, bank.key, f"assembled ({k} tasks) vs teacher with the same inference rewrites, {what}",
                            times["assembled"], times["fair teacher"], baseline_name="teacher, same rewrites",
                            batch=batch, throughput=throughput, target=f"ratio <= {limit:.2f}",
                            note=f"FLOP ratio {flop_ratio:.3f}; the teacher folded like the CKN, logits only, its "
                                 "heads one product (bench/fair_teacher.py)"))
        bench.add(timed_rows(1, bank.key, f"assembled ({k} tasks) vs plain teacher (unfair: no inference rewrites "
                            f"for the teacher), {what}", times["assembled"], times["teacher"],
                            baseline_name="plain teacher", batch=batch, throughput=throughput,
                            note="untargeted: the teacher as trained, BatchNorm unfolded, every stage pooled"))
    compiled_whole_rows(bench, bank, assembled, fair_teacher)
    separate_factors(bench, bank)


def compiled_whole_rows(bench: Bench, bank: BenchBank, assembled: nn.Module, fair_teacher: nn.Module) -> None:
    """Section 1's untargeted batch-1 rows on the CPU: both networks compiled whole (``bench/graph_mode.py``), so
    that what is left of the gap is the extra kernels' own cost, not the framework's around each call."""
    s, device, k = bench.settings, bench.device, len(bank.bank.tasks)
    if device.cuda:
        return
    x = bench.images(bank, 1)
    graphs = {name: compiled_whole(network, x) for name, network in (("assembled", assembled),
                                                                     ("teacher", fair_teacher))}
    if None in graphs.values():
        bench.notes.append(f"section 1's compiled rows skipped on {bank.key}: torch.jit could not compile them")
        return
    with torch.inference_mode():
        eager, graph = assembled(x), graphs["assembled"](x)
    worst = max(float((graph[name] - eager[name]).abs().max()) for name in eager)
    bench.checks.setdefault("compiled_vs_eager_max_abs_diff", {})[bank.key] = worst
    assert worst <= EQUALITY_ATOL, f"{bank.key}: the compiled network differs from the eager one by {worst:.1e}"
    times = interleaved({"as shipped": bench.inference(lambda: assembled(x)),
                         "assembled": bench.inference(lambda: graphs["assembled"](x)),
                         "teacher": bench.inference(lambda: graphs["teacher"](x))}, s.latency_repeats, s.warmup, device)
    bench.add(timed_rows(1, bank.key, f"compiled whole (TorchScript + oneDNN Graph): assembled ({k} tasks) vs teacher "
                                      "with the same rewrites, batch 1 latency", times["assembled"], times["teacher"],
                        baseline_name="teacher, same rewrites, compiled", batch=1, throughput=False,
                        note="untargeted: is the batch-1 gap the framework's cost around each call? "
                             "(bench/graph_mode.py)"))
    bench.add(timed_rows(1, bank.key, "assembled compiled whole vs as shipped, batch 1 latency", times["assembled"],
                        times["as shipped"], baseline_name="assembled as shipped", batch=1, throughput=False,
                        note="untargeted: what compiling the network whole gains on its own"))


def assembly_flop_ratio(bank: BenchBank, x: Tensor) -> float:
    """FLOPs of the assembled network's arithmetic (unfused: no derived map built on first use is counted) over
    the teacher's."""
    plain = AssembledNetwork(bank.bank.ckn, list(bank.bank.tsns.values())).eval()
    return forward_flops(plain, x) / forward_flops(bank.teacher.eval(), x)


def separate_factors(bench: Bench, bank: BenchBank) -> None:
    """Section 2: the assembled network vs n factor networks run one by one, each assembled alone (the same
    rewrites: folded CKN copy, fused TSN, logits only; targeted), and vs the plain factor networks (untargeted)."""
    s, device = bench.settings, bench.device
    names = [t.name for t in bank.bank.tasks]
    counts = [n for n in SEPARATE_TASKS if n <= len(names)] or [len(names)]
    for n in counts:
        chosen = names[:n]
        network = bank.bank.assemble(chosen).eval()
        factors = [bank.bank.factor(name) for name in chosen]
        optimised = [bank.bank.assemble([name]).eval() for name in chosen]
        for batch, repeats, throughput in ((1, s.latency_repeats, False),
                                           (s.throughput_batch, max(s.throughput_repeats - 2, 2), True)):
            x = bench.images(bank, batch)
            times = interleaved({"assembled": bench.inference(lambda x=x, net=network: net(x)),
                                 "optimised": bench.inference(lambda x=x, fs=optimised: [f(x) for f in fs]),
                                 "separate": bench.inference(lambda x=x, fs=factors: [f(x) for f in fs])},
                                repeats, s.warmup, device)
            what = f"batch {batch} throughput" if throughput else "batch 1 latency"
            bench.add(timed_rows(2, bank.key, f"assembled vs {n} separate factor networks with the same inference "
                                f"rewrites, {what}", times["assembled"], times["optimised"],
                                baseline_name=f"{n} factor networks, same rewrites", batch=batch, throughput=throughput,
                                target="ratio <= 0.5", note="each factor network is bank.assemble([task])"))
            bench.add(timed_rows(2, bank.key, f"assembled vs {n} plain separate factor networks (unfair), {what}",
                                times["assembled"], times["separate"], baseline_name=f"{n} plain factor networks",
                                batch=batch, throughput=throughput,
                                note="untargeted: FactorNetwork(ckn, tsn) as trained"))
    if len(names) < max(SEPARATE_TASKS):
        bank.notes.append(f"section 2 at {counts} task(s) only: the bank has {len(names)} tasks")


def stack(bench: Bench, bank: BenchBank) -> None:
    from kf_model.data.specs import TaskSpec
    from kf_model.models import TaskSpecificNetwork
    from kf_model.models.stacking import EXECUTION_PATHS, TSNStack

    s, device = bench.settings, bench.device
    template = next(iter(bank.bank.tsns.values()))
    config = dict(template.init_config)
    torch.manual_seed(0)
    tsns = []
    for i in range(STACK_TASKS):  # binary heads: the same shapes for every TSN, so that vmap applies
        task = TaskSpec(f"task{i}", ("no", "yes"), f"synthetic task {i}")
        tsn = TaskSpecificNetwork(**{**config, "task": task.to_dict()})
        randomize_batchnorm(tsn)
        tsns.append(tsn.eval().to(device.device))
    unfused = TSNStack(tsns).eval()
    stack = TSNStack(tsns).fuse_for_inference()
    stack_cl = copy.deepcopy(stack).to(memory_format=torch.channels_last)
    vmapped = vmapped_tsns(tsns)
    ckn_width = config["ckn_width"]
    forced_paths = {}  # each execution path the stack chooses between, pinned, to show the rule is right
    for path in EXECUTION_PATHS[1:] if device.device.type == "cpu" else ("grouped", "per-task"):
        forced_paths[path] = copy.deepcopy(stack)
        forced_paths[path].forced_path = path

    def variants(x: Tensor, z: Tensor) -> dict[str, Callable[[], Any]]:
        x_cl = x.contiguous(memory_format=torch.channels_last)
        return {
            "loop": lambda: [t(x, z).logits for t in tsns],
            "stack": lambda: stack(x, z).logits,
            "stack, BN not folded": lambda: unfused(x, z).logits,
            "stack before issue 6 (einsum heads, BN not folded)": lambda: einsum_stack_logits(unfused, x, z),
            "stack, channels_last": lambda: stack_cl(x_cl, z).logits,
            "vmap over the TSNs": lambda: vmapped(x, z),
            **{f"stack forced to {path}": lambda stack=forced: stack(x, z).logits
               for path, forced in forced_paths.items()},
        }

    # exactness, in float32 (TF32 off on CUDA), at batch 1 and at the throughput batch
    worst: dict[str, float] = {}
    for batch in (1, s.throughput_batch):
        x = bench.images(bank, batch)
        z = torch.rand(batch, ckn_width, generator=torch.Generator().manual_seed(1)).to(device.device)
        with torch.inference_mode(), no_tf32():
            outputs = {name: fn() for name, fn in variants(x, z).items()}
        reference = torch.stack(outputs.pop("loop"))
        for name, out in outputs.items():
            out = torch.stack(list(out.values()) if isinstance(out, dict) else list(out))
            worst[name] = max(worst.get(name, 0.0), float((out.float() - reference.float()).abs().max()))
    bench.checks.setdefault("stack_vs_loop_max_abs_diff", {})[bank.key] = worst
    bad = {name: diff for name, diff in worst.items() if not diff <= EQUALITY_ATOL}
    assert not bad, f"{bank.key}: TSN stack variants differ from the loop over TSNs by more than 1e-5: {bad}"

    batches = sorted({1, *[b for b in STACK_BATCHES if b < s.throughput_batch], s.throughput_batch})
    for batch in batches:  # the stack picks grouped kernels or a per-task pass by batch size (models/stacking.py)
        throughput = batch > 1
        repeats = s.throughput_repeats if throughput else s.latency_repeats
        x = bench.images(bank, batch)
        z = torch.rand(batch, ckn_width, generator=torch.Generator().manual_seed(1)).to(device.device)
        sides = {name: bench.inference(fn) for name, fn in variants(x, z).items()}
        if throughput:
            sides = {name: side for name, side in sides.items() if name in ("loop", "stack")
                     or name.startswith("stack forced")}
        times = interleaved(sides, repeats, s.warmup, device)
        what = f"batch {batch} throughput" if throughput else "batch 1 latency"
        path = stack.execution_path(x)
        bench.add(timed_rows(3, bank.key, f"TSN stack vs loop over {STACK_TASKS} TSNs, {what}", times["stack"],
                            times["loop"], baseline_name="loop", batch=batch, throughput=throughput,
                            target="ratio <= 1.0",
                            note=f"stack runs {path}; max |stack - loop| = {worst['stack']:.1e}"))
        for name in list(sides)[2:]:
            bench.add(timed_rows(3, bank.key, f"{name} vs stack as shipped, {what}", times[name],
                                times["stack"], baseline_name="stack", batch=batch, throughput=throughput,
                                note=f"max |{name} - loop| = {worst[name]:.1e}; shipped runs {path}"))


def onnx(bench: Bench, bank: BenchBank, work: Path) -> None:
    """onnxruntime on the exported assembled network vs torch, CPU, batch 1 and the throughput batch."""
    import numpy as np
    import onnxruntime

    s = bench.settings
    cpu_bank = copy.deepcopy(bank.bank).to("cpu")
    path = cpu_bank.export_onnx(None, work / f"{bank.key}.onnx")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = bench.args.threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    network = cpu_bank.assemble()
    teacher = LogitsOnlyTeacher(copy.deepcopy(bank.teacher).to("cpu").eval()).eval()
    teacher_path = export_teacher_onnx(teacher, bench.images(bank, 2).cpu(), work / f"{bank.key}-teacher.onnx")
    teacher_session = onnxruntime.InferenceSession(str(teacher_path), options, providers=["CPUExecutionProvider"])
    flop_ratio = bench.checks.get("assembled_vs_teacher_flop_ratio", {}).get(bank.key)
    cpu = Device(torch.device("cpu"))
    for batch, repeats, throughput in ((1, s.latency_repeats, False),
                                       (s.throughput_batch, s.throughput_repeats, True)):
        x = bench.images(bank, batch).cpu()
        feed = {"image": x.numpy()}
        reference = network(x)
        worst = max(float(np.abs(out - reference[name].detach().numpy()).max())
                    for name, out in zip([t.name for t in network.tasks], session.run(None, feed)))
        with torch.inference_mode():
            teacher_reference = teacher(x)
        teacher_worst = max(float(np.abs(out - teacher_reference[name].numpy()).max())
                            for name, out in zip(teacher.names, teacher_session.run(None, feed)))

        def torch_call(x=x) -> Any:
            with torch.inference_mode():
                return network(x)

        times = interleaved({"onnx": lambda feed=feed: session.run(None, feed), "torch": torch_call,
                             "onnx teacher": lambda feed=feed: teacher_session.run(None, feed)}, repeats,
                            s.warmup, cpu)
        what = f"batch {batch} throughput" if throughput else "batch 1 latency"
        bench.add(timed_rows(7, bank.key, f"onnxruntime vs torch (CPU), assembled network, {what}", times["onnx"],
                            times["torch"], baseline_name="torch", batch=batch, throughput=throughput,
                            note=f"max |onnx - torch| = {worst:.1e}"))
        flops = "" if flop_ratio is None else f"FLOP ratio {flop_ratio:.3f}; "
        bench.add(timed_rows(7, bank.key, f"onnxruntime: assembled ({len(network.tasks)} tasks) vs teacher with the "
                                          f"same inference rewrites, {what}", times["onnx"], times["onnx teacher"],
                            baseline_name="teacher, same rewrites, onnxruntime", batch=batch, throughput=throughput,
                            note=f"untargeted: {flops}the section 1 teacher exported as the assembled network is "
                                 f"(bench/fair_teacher.py; max |onnx - torch| = {teacher_worst:.1e}), both sessions "
                                 f"{bench.args.threads} thread(s)"))
