"""Knowledge factorization: a CKN + one TSN per task, trained with the InfoMax-Bottleneck objective.

    python train/factorize.py --config train/configs/dsprites_factorize.json --teacher runs/dsprites/teacher \
        --output-dir runs/dsprites/bank [--push-to-hub ORG/REPO --hub-tag v1]

Writes a factor bank (factors.json, README.md, ckn/, tsn/<task>/: load with FactorBank.from_pretrained) plus
training.json and log.jsonl. The loop is kf_model.training.fit.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from kf_model.training import FactorizeJob, cli

if __name__ == "__main__":
    cli(FactorizeJob)
