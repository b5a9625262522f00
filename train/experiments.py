"""The transfer and disentanglement experiments (kf_model.experiments), each assembled into one JSON file.

At the recipes' scale, resumable (one result file a run; the same command again skips finished runs and resumes
an interrupted training from its checkpoint; the JSON is assembled from the finished runs and names the missing):

    python train/experiments.py disentanglement --scale full --output runs/experiments-full    # claim b
    python train/experiments.py sweep --scale full --output runs/experiments-full [--betas 0 0.001 --infomins batch]
    python train/experiments.py init_ckn --scale full --dataset dsprites --output runs/experiments-full
    python train/experiments.py transfer --scale full --dataset dsprites --output runs/experiments-full  # claim c
    python train/experiments.py transfer --scale full --dataset fashion-mnist --output runs/experiments-full

The one-shot smoke test of the commands (small networks, minutes):

    python train/experiments.py transfer --dataset dsprites --quick
    python train/experiments.py disentanglement --quick
    python train/experiments.py sweep --quick                      # width x beta x InfoMin variant, validation split
    python train/experiments.py report --output docs/experiments --readme README.md  # README tables + figures
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from kf_model.experiments.cli import main

if __name__ == "__main__":
    sys.exit(main())
