"""Side-by-side performance ratios of kf: ``python -m kf_model.bench`` (``make bench``).

    python -m kf_model.bench [--device cpu|cuda|auto] [--quick] [--banks DIR ...] [--out FILE] [--skip-serving]
                             [--skip-real-size] [--threads N] [--sections networks stack ... runtime]

Nine sections (``--sections`` picks some), each a measured figure next to its baseline, measured in the same run on
the same machine:

1. the assembled network (CKN + all TSNs) vs the teacher: latency at batch 1, throughput at batch 256, with
   the FLOP ratio of the two (torch's FlopCounterMode): the target is 1.15, or the FLOP ratio + 0.05 if higher;
2. the assembled network vs each task's factor network run separately (k CKN passes), at 5 and 10 tasks;
3. 10 TSNs as one ``TSNStack`` (grouped convolutions, BatchNorm folded at inference) vs a Python loop over
   the 10 TSNs, plus the alternatives that were tried (channels_last, ``torch.func.vmap``, BN not folded,
   the stack before issue 6); all must agree with the loop within 1e-5 (asserted, in float32). Timed at batch
   1, 16, 64, 128 and 256 (target <= 1.0 each): the stack picks grouped kernels or a per-task pass by size;
4. one knowledge-factorization training step vs one KD-baseline step on the same batch, both built by
   :mod:`kf_model.training` (``FactorizeJob`` / ``DistillJob``: networks, objective, optimizer);
5. the app (``python app.py`` in a subprocess, both banks): ``/predict`` p50/p95 through ``gradio_client`` and
   through one kept-alive HTTP connection vs the same prediction in-process; cold start (process start to the
   first answer) vs a process that only imports the app's code (kf_model.ui.app); the peak memory of the app's
   processes (the app and its prediction workers, shared libraries counted once: target <= 1.5 GB) and its
   plateau under a mixed workload;
6. the dSprites training loader (built as ``fit`` builds it) in images/s vs the KF step's images/s;
7. the assembled network exported to ONNX (``FactorBank.export_onnx``) run by onnxruntime vs torch, CPU, and vs
   section 1's teacher exported the same way (untargeted: the same comparison on onnxruntime);
8. real size: a timm ResNet-50 teacher at 224 px factorized into a timm ResNet-18 CKN + 10 TSNs (untrained):
   sections 1, 2 and 4 again (KF step target <= 1.3 x KD step), and a loader over 320x240 JPEGs on disk
   (``open_dataset`` image folder, DataLoader workers) vs the KF step's images/s. ``--quick`` uses timm's
   ``test_resnet`` at 64 px instead.
9. the app's runtimes and int8 (CPU, :mod:`kf_model.bench.sections_runtime`): in-process ``/predict`` with
   onnxruntime vs torch; the int8 file (``export_onnx(..., quantize="int8")``) vs the float32 one in onnxruntime
   at batch 1 and the throughput batch, the int8 test-accuracy drop per task (target <= 0.5 pt), section 8's
   224-px network (target: int8 >= 1.8x faster) and the photo bank (agreement with float32 on the held-out
   photographs, target >= 99 %).

Method: the sides of a ratio are timed alternately after a warm-up (two sides swap their order every repeat,
more run in a seeded random order), with the garbage collector paused, and their medians are compared: load
changes hit both sides, so the ratios hold on a busy machine while the absolute figures do not. On CUDA each
call is bracketed by ``torch.cuda.synchronize()`` and runs under bf16 autocast (fp16 where the GPU lacks
bf16, as in the app); the equality checks of section 3 run in float32 with TF32 off. On the CPU torch uses
``--threads`` threads (default 1, the app's ``KF_TORCH_THREADS`` default): these small networks gain little
from more, and one thread keeps a shared machine's load from leaking into one side of a ratio.

Banks: a ``--banks`` folder that holds a factor bank is loaded; its teacher's architecture comes from the
manifest's teacher summary and its training configuration from the manifest, else from ``train/configs``.
A missing folder named after a dataset gets an untrained bank and teacher built from the recipe
(``train/configs/<dataset>_*.json``): speed does not depend on the weights. The training step uses a batch of
the real training loader when the dataset is installed, random images of the right shape otherwise.

Layout: ``settings`` (settings, rows, targets), ``timing`` (device, alternating timer), ``banks`` (banks,
teachers, training jobs), ``workloads`` (baselines and inputs), ``app_process`` (section 5's app),
``report`` (the table and the report), ``runner`` (:class:`Bench`, one method a section; :func:`main`).
"""

from kf_model.bench.app_process import (
    GradioHTTP,
)
from kf_model.bench.report import (
    table,
)
from kf_model.bench.settings import (
    Row,
    check_target,
)
from kf_model.bench.timing import (
    percentile,
)
from kf_model.bench.workloads import floor_row

__all__ = [
    "GradioHTTP", "Row", "check_target", "floor_row", "percentile", "table",
]
