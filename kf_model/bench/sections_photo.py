"""Section 8's photograph bank: the bundled EfficientNet-Lite0 bank (CKN + 13 TSNs) against its teacher at 224 px.

The teacher is the bank's own record: its folder (``teacher.source`` in the manifest, with the trained weights)
when this checkout has it, else the architecture the manifest names, untrained, read through the manifest's task
map. Time does not depend on the weights; the row says which teacher ran. The assembled network's CKN has its
BatchNorms folded (``fold_for_inference``, through the traced graph of the timm trunk), so the targeted rows give
the teacher the same folding; both read channels-last images on the CPU (``models.layers.channels_last_on_cpu``),
and both infer a batch of these 224-px images a few at a time (``models.passes``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from kf_model.bank import FactorBank
from kf_model.bench.settings import timed_rows
from kf_model.bench.timing import interleaved
from kf_model.bench.workloads import forward_flops, passes_note
from kf_model.data.specs import TaskSpec
from kf_model.errors import KFError
from kf_model.models.factor import AssembledNetwork
from kf_model.models.folded import fold_for_inference
from kf_model.models.passes import in_passes
from kf_model.teachers import create_task_map_teacher, with_new_head
from kf_model.teachers.task_maps import TaskMap, TaskMapTeacher
from kf_model.utils import ASSETS_DIR, REPO_ROOT

if TYPE_CHECKING:
    from kf_model.bench.runner import Bench

PHOTO_BANK = ASSETS_DIR / "factors" / "photo-everyday"
PHOTO_BATCH = 32


def photo_teacher(bank: FactorBank) -> tuple[nn.Module, str] | None:
    """(teacher, where it came from), or None when the manifest records neither a teacher folder nor its
    architecture and task map."""
    summary = bank.manifest.teacher or {}
    if not isinstance(summary.get("task_map"), dict):
        return None
    task_map = TaskMap.from_dict(summary["task_map"], "the photo bank's teacher task map")
    source = str(summary.get("source") or "")
    folder = REPO_ROOT / source
    why = f"{source or 'its folder'} is not in this checkout"
    if source and (folder / "model.safetensors").is_file():
        try:
            return create_task_map_teacher(str(folder), task_map), f"{source} (trained weights)"
        except KFError as error:  # e.g. a folder this version of kf cannot read: time the architecture instead
            why = f"{source} did not load: {error}"
    if not summary.get("architecture"):
        return None
    name = f"timm:{summary['architecture']}"
    own = [TaskSpec("class", tuple(str(i) for i in range(task_map.teacher_classes)), "the teacher's own classes")]
    untrained = with_new_head(name, weights=None, tasks=own, one_vs_rest=False, input_spec=bank.input_spec)
    return (TaskMapTeacher(untrained, task_map).eval(),
            f"{name} as the manifest records it, untrained ({why})")


def photo_bank(bench: Bench, folder: Path = PHOTO_BANK) -> None:
    """Assembled (every task) vs the teacher at batch 1 and ``PHOTO_BATCH``, target the FLOP ratio + 0.05."""
    s, device = bench.settings, bench.device
    if bench.args.quick:
        bench.notes.append("section 8's photo bank skipped (--quick)")
        return
    if not (folder / "factors.json").is_file():
        bench.notes.append(f"section 8's photo bank skipped: no bank at {folder}")
        return
    bank = FactorBank.from_pretrained(folder, device=device.device)
    made = photo_teacher(bank)
    if made is None:
        bench.notes.append(f"section 8's photo bank skipped: {folder} records no teacher architecture and task map")
        return
    teacher, teacher_source = made
    teacher = teacher.to(device.device).eval()
    spec, k = bank.input_spec, len(bank.tasks)
    label = f"{folder.name}: {bank.manifest.teacher.get('architecture')} @{spec.size}"
    x1 = torch.rand(1, spec.channels, spec.size, spec.size).to(device.device)
    plain = AssembledNetwork(bank.ckn, list(bank.tsns.values())).eval()
    flop_ratio = forward_flops(plain, x1) / forward_flops(teacher, x1)
    bench.checks.setdefault("assembled_vs_teacher_flop_ratio", {})[label] = round(flop_ratio, 4)
    assembled = bank.assemble().eval()
    folded_teacher = fold_for_inference(teacher).eval()  # the CKN's rewrites: BatchNorm folded, and passes
    unfolded = AssembledNetwork(bank.ckn, list(bank.tsns.values()), for_inference=True, folded_ckn=bank.ckn).eval()
    for batch, throughput in ((1, False), (PHOTO_BATCH, True)):
        x = torch.rand(batch, spec.channels, spec.size, spec.size).to(device.device)
        times = interleaved({"assembled": bench.inference(lambda x=x: assembled(x)),
                             "folded teacher": bench.inference(lambda x=x: in_passes(folded_teacher, x)),
                             "teacher": bench.inference(lambda x=x: teacher(x)),
                             "unfolded": bench.inference(lambda x=x: unfolded(x))}, s.real_repeats, s.warmup, device)
        what = f"batch {batch} throughput" if throughput else "batch 1 latency"
        bench.add(timed_rows(8, label, f"assembled ({k} tasks) vs teacher with the same BatchNorm folding and passes, "
                                       f"{what}", times["assembled"], times["folded teacher"],
                            baseline_name="teacher, BatchNorm folded, passes",
                            batch=batch, throughput=throughput, target=f"ratio <= {flop_ratio + 0.05:.2f}",
                            note=f"FLOP ratio {flop_ratio:.3f}; teacher: {teacher_source}; both trunks folded by "
                                 "fold_for_inference (models/traced_folding.py); "
                                 f"{passes_note(folded_teacher, assembled, x)}"))
        bench.add(timed_rows(8, label, f"assembled ({k} tasks) vs plain teacher (unfair: BatchNorm unfolded, one "
                                       f"pass), {what}", times["assembled"], times["teacher"],
                            baseline_name="plain teacher", batch=batch, throughput=throughput,
                            note="untargeted: the teacher as trained"))
        bench.add(timed_rows(8, label, f"assembled, CKN's BatchNorm not folded vs as shipped, {what}",
                            times["unfolded"], times["assembled"], baseline_name="assembled as shipped", batch=batch,
                            throughput=throughput, note="what folding the timm CKN's BatchNorms gains "
                                                        "(models/traced_folding.py)"))
