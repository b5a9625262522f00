"""Grow a factor bank: train one new task's factor (TSN + heads) against the bank's frozen CKN.

    python train/add_task.py --bank runs/dsprites/bank --dataset dsprites --task pos_x \
        --output-dir runs/dsprites/add-pos_x [--teacher runs/dsprites/teacher]
    python train/add_task.py --bank ORG/REPO[@REV] --dataset dsprites --task pos_x --output-dir ... \
        --push-to-hub [--create-pr]

A folder bank is grown in place (tsn/<task>/, factors.json, README.md; nothing else is touched); a Hub bank is
written to <output-dir>/bank and, with --push-to-hub, committed onto the revision it was pulled at. Old tasks
keep bit-identical outputs. The loop is kf_model.training.fit, the job kf_model.training.add_task.AddTaskJob.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from kf_model.training import cli
from kf_model.training.add_task import AddTaskJob

if __name__ == "__main__":
    cli(AddTaskJob)
