"""Train the multi-task teacher (one head per task, or one K-way classifier read as K one-vs-rest tasks).

    python train/train_teacher.py --config train/configs/dsprites_teacher.json --output-dir runs/dsprites/teacher
    accelerate launch train/train_teacher.py --config ... --output-dir ...

Writes <output-dir>/config.json + model.safetensors (load with kf_model.bank.load_module(Teacher, folder, label)),
training.json (summary) and log.jsonl (loss curve). The loop is kf_model.training.fit.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from kf_model.training import TeacherJob, cli

if __name__ == "__main__":
    cli(TeacherJob)
