"""Familiarity: does an input look like the images a bank was trained on?

Classifiers answer every input with confident-looking probabilities, a colour photo included. The CKN
already sees every image, so its pooled features (the last three stages, concatenated) are compared
with those of the bank's training images: the squared Mahalanobis distance to their mean, under a
covariance shrunk towards its average variance (well-conditioned even with few images). The distance is
read against the same distances of held-out test images: the *familiarity* of an input is the share of
the bank's own test images that are farther away (100 %: as typical as they come; under 5 %: flagged,
by construction about 5 % of the bank's own test images are).

Stored in the bank, never as a pickle::

    familiarity/model.safetensors   mean [D], precision [D, D], reference distances (sorted) [N]
    familiarity/config.json         method, threshold, flag rate, samples, CKN fingerprint

and summarised in ``factors.json`` under ``"familiarity"`` (with ``"input_description"``: what a good
input looks like, in words).

Commands (``kf_model.serving.familiarity_check``)::

    python -m kf_model.serving.familiarity_check calibrate BANK [--dataset NAME] [--train-limit N] [--test-limit N]
    python -m kf_model.serving.familiarity_check measure [--banks assets/factors] [--out runs/familiarity.json]
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from kf_model.bank import FAMILIARITY_DIR, MANIFEST_FILE, FactorBank
from kf_model.data import load_dataset
from kf_model.errors import CorruptWeightsError, KFError

log = logging.getLogger(__name__)

FOLDER = FAMILIARITY_DIR  # inside a bank folder
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
METHOD = "mahalanobis-ckn-pooled"
FLAG_RATE = 0.05  # share of the bank's own held-out images flagged, by construction
SHRINKAGE = 0.1  # weight of the scaled identity in the shrunk covariance
MAX_DIM = 4096  # a stats file claiming more feature dimensions than this is refused

KNOWN_INPUTS = {  # what the bundled datasets look like, in words (written into a manifest by `calibrate`)
    "dsprites": "one white shape (square, ellipse or heart) on a black background, 64x64 grey, like the "
                "dSprites images; a drawing on white is inverted automatically",
    "fashion-mnist": "one garment, shoe or bag, centred, light on a black background, 28x28 grey, like a "
                     "Fashion-MNIST product photo; a product on white is inverted automatically",
}


# ============================================================================ math

def pooled_features(ckn_output: Any) -> Tensor:
    """A CKN output (``CKNOutput``) -> [B, D]: its pooled stage features, concatenated, in float32."""
    return torch.cat([f.float() for f in ckn_output.features], dim=1)


def shrunk_precision(features: Tensor, shrinkage: float = SHRINKAGE) -> tuple[Tensor, Tensor]:
    """[N, D] features -> (mean [D], precision [D, D]) of ``(1-a)·S + a·(tr S / D)·I`` (float64 maths).

    The identity term keeps the inverse finite when some feature never varies (a dead channel).
    """
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError("need a [N, D] matrix of at least 2 feature vectors")
    if not 0.0 < shrinkage <= 1.0:
        raise ValueError(f"shrinkage must be in (0, 1], got {shrinkage}")
    x = features.double()
    mean = x.mean(0)
    centred = x - mean
    covariance = centred.T @ centred / (x.shape[0] - 1)
    scale = float(covariance.diagonal().mean()) or 1.0
    shrunk = (1.0 - shrinkage) * covariance + shrinkage * scale * torch.eye(x.shape[1], dtype=torch.float64)
    precision = torch.linalg.inv(shrunk)
    return mean.float(), ((precision + precision.T) / 2).float()


def mahalanobis(features: Tensor, mean: Tensor, precision: Tensor) -> Tensor:
    """[B, D] -> [B] squared Mahalanobis distances."""
    centred = features.float() - mean
    return ((centred @ precision) * centred).sum(1).clamp_min(0.0)


@dataclass
class FamiliarityModel:
    """The statistics of one bank's training features + its held-out reference distances."""

    mean: Tensor  # [D]
    precision: Tensor  # [D, D]
    reference: Tensor  # [N] sorted squared distances of held-out test images
    threshold: float  # distances above it are flagged
    flag_rate: float = FLAG_RATE
    info: dict[str, Any] | None = None  # the rest of config.json (samples, dataset, fingerprint)

    def distance(self, features: Tensor) -> Tensor:
        return mahalanobis(features.to(self.mean.device), self.mean, self.precision)

    def familiarity(self, distances: Tensor) -> Tensor:
        """[B] distances -> [B] share of the reference images that are farther away, in [0, 1]."""
        reference = self.reference.to(distances.device)
        below = torch.searchsorted(reference, distances.float().contiguous(), right=True)
        return 1.0 - below.float() / reference.numel()

    def score(self, features: Tensor) -> list[dict[str, Any]]:
        """[B, D] CKN features -> per image {"familiarity", "distance", "unfamiliar"} (plain floats)."""
        distances = self.distance(features)
        shares = self.familiarity(distances)
        return [{"familiarity": round(float(s), 4), "distance": round(float(d), 2),
                 "unfamiliar": bool(d > self.threshold)} for d, s in zip(distances.tolist(), shares.tolist())]

    # ------------------------------------------------------------------ files
    def save(self, bank_folder: str | Path, extra: dict[str, Any] | None = None) -> Path:
        folder = Path(bank_folder) / FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        save_file({"mean": self.mean.contiguous(), "precision": self.precision.contiguous(),
                   "reference": self.reference.contiguous()}, str(folder / WEIGHTS))
        config = {"method": METHOD, "threshold": self.threshold, "flag_rate": self.flag_rate,
                  "dim": int(self.mean.numel()), **(self.info or {}), **(extra or {})}
        (folder / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, bank_folder: str | Path, ckn_fingerprint: str | None = None) -> FamiliarityModel | None:
        """The bank's familiarity statistics, or None when it has none (old banks) or they are for another CKN."""
        folder = Path(bank_folder) / FOLDER
        if not (folder / WEIGHTS).is_file() or not (folder / CONFIG).is_file():
            return None
        try:
            config = json.loads((folder / CONFIG).read_text())
            tensors = load_file(str(folder / WEIGHTS))
            mean, precision, reference = tensors["mean"], tensors["precision"], tensors["reference"]
            threshold = float(config["threshold"])
        except Exception as error:  # safetensors' own error type, OSError, JSON, missing keys
            raise CorruptWeightsError(f"cannot read the familiarity statistics in {folder}: {error}") from error
        dim = mean.numel()
        if (config.get("method") != METHOD or not 0 < dim <= MAX_DIM or mean.shape != (dim,)
                or precision.shape != (dim, dim) or reference.ndim != 1 or reference.numel() < 10
                or not math.isfinite(threshold)):
            raise CorruptWeightsError(f"{folder}: familiarity statistics of an unexpected form")
        if ckn_fingerprint and config.get("ckn_fingerprint") not in (None, ckn_fingerprint):
            log.warning("%s: familiarity statistics belong to another CKN; ignored", folder)
            return None
        info = {k: v for k, v in config.items() if k not in ("method", "threshold", "flag_rate", "dim")}
        return cls(mean.float(), precision.float(), reference.float().sort().values, threshold,
                   float(config.get("flag_rate", FLAG_RATE)), info)


def features_of(ckn: torch.nn.Module, batches: Iterable[Tensor]) -> Tensor:
    """Run the CKN over image batches [B, C, H, W] -> [N, D] pooled features on the CPU."""
    device = next(ckn.parameters()).device
    out = []
    with torch.inference_mode():
        for batch in batches:
            out.append(pooled_features(ckn(batch.to(device))).cpu())
    return torch.cat(out)


def fit(ckn: torch.nn.Module, train_batches: Iterable[Tensor], test_batches: Iterable[Tensor], *,
        flag_rate: float = FLAG_RATE, shrinkage: float = SHRINKAGE) -> FamiliarityModel:
    """Statistics of the CKN features of training images, threshold at the (1 - flag_rate) quantile of the
    distances of held-out test images (so that share of them is flagged)."""
    if not 0.0 < flag_rate < 0.5:
        raise ValueError(f"flag_rate must be in (0, 0.5), got {flag_rate}")
    mean, precision = shrunk_precision(features_of(ckn, train_batches), shrinkage)
    reference = mahalanobis(features_of(ckn, test_batches), mean, precision).sort().values
    threshold = float(torch.quantile(reference.double(), 1.0 - flag_rate))
    return FamiliarityModel(mean, precision, reference, threshold, flag_rate,
                            {"shrinkage": shrinkage, "train_samples": 0, "reference_samples": int(reference.numel())})


# ============================================================================ words

def describe_input(manifest: Any) -> str:
    """What a good input looks like, in words: the manifest's ``input_description``, else derived from it."""
    text = getattr(manifest, "input_description", None)
    if text:
        return str(text)
    spec = manifest.input_spec
    if manifest.dataset in KNOWN_INPUTS:
        return KNOWN_INPUTS[manifest.dataset]
    colour = "grey" if spec.channels == 1 else "colour"
    like = f"the {manifest.dataset} training images" if manifest.dataset else "its training images"
    return f"{spec.size}x{spec.size} {colour} images like {like}"


# ============================================================================ the bank's data

def image_batches(dataset: Any, positions: Sequence[int], batch_size: int = 512) -> Iterable[Tensor]:
    for start in range(0, len(positions), batch_size):
        yield dataset.get_batch(list(positions[start:start + batch_size]))[0]


def split_positions(n: int, first: int, second: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """Two disjoint seeded random position lists (calibration, measurement) out of ``n``."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[:first]), sorted(order[first:first + second])


def calibrate(bank_folder: str | Path, dataset: str | None = None, *, train_limit: int = 20_000,
              test_limit: int = 5_000, seed: int = 0, data_dir: str | None = None,
              input_description: str | None = None) -> dict[str, Any]:
    """Fit a bank's familiarity statistics on its dataset and add them to the bank folder.

    Only ``familiarity/`` is written and ``factors.json`` gains two keys; the weights are untouched.
    The threshold uses the first ``test_limit`` of a seeded shuffle of the test split; :func:`measure`
    reports the flagged share on the next ones.
    """
    folder = Path(bank_folder)
    bank = FactorBank.from_pretrained(folder)
    name = dataset or bank.manifest.dataset
    if not name:
        raise KFError(f"{folder}: the manifest names no dataset; pass --dataset")
    train = load_dataset(name, "train", root=data_dir, limit=train_limit, seed=seed)
    test = load_dataset(name, "test", root=data_dir)
    calibration, _ = split_positions(len(test), min(test_limit, len(test) // 2), 0, seed)
    model = fit(bank.ckn, image_batches(train, list(range(len(train)))), image_batches(test, calibration))
    model.info = {**(model.info or {}), "train_samples": len(train), "dataset": name, "seed": seed,
                  "ckn_fingerprint": bank.manifest.ckn_fingerprint,
                  "calibration": f"first {len(calibration)} of a seed-{seed} shuffle of the test split"}
    model.save(folder)
    manifest_path = folder / MANIFEST_FILE
    raw = json.loads(manifest_path.read_text())
    raw["input_description"] = input_description or raw.get("input_description") or KNOWN_INPUTS.get(name) or \
        describe_input(bank.manifest)
    summary = {"file": f"{FOLDER}/{WEIGHTS}", "method": METHOD, "flag_rate": model.flag_rate,
               "threshold": round(model.threshold, 4), "train_samples": len(train),
               "reference_samples": int(model.reference.numel())}
    raw["familiarity"] = summary
    manifest_path.write_text(json.dumps(raw, indent=2))
    return summary
