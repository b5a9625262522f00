"""Distil one multi-task student from a frozen teacher: the paper's KD baseline (CE + KD).

    python train/distill.py --config train/configs/dsprites_distill.json --teacher runs/dsprites/teacher \
        --output-dir runs/dsprites/kd_student

Same output format as train_teacher.py. --match-factorization CONFIG reports (and without --width matches) the
parameter count of the factorization that CONFIG describes. The loop is kf_model.training.fit.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from kf_model.training import DistillJob, cli

if __name__ == "__main__":
    cli(DistillJob)
