"""The transfer and disentanglement experiments (kf_model.experiments), each writing one JSON file.

    python train/experiments.py transfer --dataset dsprites --quick
    python train/experiments.py transfer --dataset fashion-mnist --quick
    python train/experiments.py disentanglement --quick
    python train/experiments.py sweep --quick                      # width x beta x InfoMin variant, validation split
    python train/experiments.py report --output docs/experiments   # README tables + transfer.png from the JSON
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from kf_model.experiments.cli import main

if __name__ == "__main__":
    sys.exit(main())
