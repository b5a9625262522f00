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

    python -m kf_model.serving.familiarity_check calibrate BANK [--dataset NAME] [--photographs] [--signals-only]
    python -m kf_model.serving.familiarity_check measure [--banks assets/factors] [--out docs/familiarity.json]
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from kf_model.bank import FAMILIARITY_DIR, MANIFEST_FILE, FactorBank
from kf_model.data import load_dataset
from kf_model.errors import CorruptWeightsError, KFError
from kf_model.serving.familiarity_files import MAX_DIM, MAX_REFERENCE, check_config, check_tensors
from kf_model.serving.input_signals import SignalLimits
from kf_model.serving.signal_calibration import calibrate_signals

log = logging.getLogger(__name__)

FOLDER = FAMILIARITY_DIR  # inside a bank folder
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
METHOD = "mahalanobis-ckn-pooled"
FLAG_RATE = 0.05  # share of the bank's own held-out images flagged, by construction
SHRINKAGE = 0.1  # weight of the scaled identity in the shrunk covariance
MAX_CONFIG_BYTES = 64 * 1024  # a familiarity config.json larger than this is refused unread
MAX_WEIGHTS_BYTES = 8 * (MAX_DIM * MAX_DIM + MAX_DIM + MAX_REFERENCE) + 2**20  # float64 at the largest sizes

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
    """The statistics of one bank's training features + its held-out reference distances, and the limits of
    the pre-network photo signals (:mod:`kf_model.serving.input_signals`) when the bank's inputs are not
    photographs."""

    mean: Tensor  # [D]
    precision: Tensor  # [D, D]
    reference: Tensor  # [N] sorted squared distances of held-out test images
    threshold: float  # distances above it are flagged
    flag_rate: float = FLAG_RATE
    info: dict[str, Any] | None = None  # the rest of config.json (samples, dataset, fingerprint)
    signal_limits: SignalLimits | None = None  # None: no pre-network check (old banks, banks of photographs)

    def distance(self, features: Tensor) -> Tensor:
        return mahalanobis(features.to(self.mean.device), self.mean, self.precision)

    def familiarity(self, distances: Tensor) -> Tensor:
        """[B] distances -> [B] share of the reference images that are farther away, in [0, 1] (NaN: 0)."""
        reference = self.reference.to(distances.device)
        below = torch.searchsorted(reference, distances.float().contiguous(), right=True)
        share = 1.0 - below.float() / reference.numel()
        return torch.where(torch.isfinite(distances), share, torch.zeros_like(share))

    def score(self, features: Tensor, signals: Sequence[Mapping[str, float] | None] | None = None
              ) -> list[dict[str, Any]]:
        """[B, D] CKN features (+ each image's pre-network signals) -> per image {"familiarity", "distance",
        "unfamiliar", "reason"} (plain floats; ``reason`` is "" when the image looks familiar).

        A signal above its limit makes the image unfamiliar with familiarity 0 (the bank's own images
        essentially never go there); a distance that is not a number is never "familiar".
        """
        distances = self.distance(features)
        shares = self.familiarity(distances)
        signals = list(signals) if signals is not None else [None] * len(distances)
        return [self._verdict(d, s, sig) for d, s, sig in zip(distances.tolist(), shares.tolist(), signals,
                                                              strict=True)]

    def _verdict(self, distance: float, share: float, signals: Mapping[str, float] | None) -> dict[str, Any]:
        exceeded = self.signal_limits.check(signals) if self.signal_limits is not None and signals is not None else []
        finite = math.isfinite(distance)
        far = not (distance <= self.threshold)  # NaN counts as far
        if exceeded:
            reason = "unlike the bank's images before the network looks: " + self.signal_limits.reason(exceeded)
        elif not finite:
            reason = "the network's features of this image are not finite numbers"
        elif far:
            reason = (f"its features are farther from the training images' than {1 - self.flag_rate:.0%} of the "
                      "bank's own test images")
        else:
            reason = ""
        return {"familiarity": 0.0 if exceeded else round(float(share), 4),
                "distance": round(float(distance), 2) if finite else None,
                "unfamiliar": bool(exceeded) or far, "reason": reason}

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
    def load(cls, bank_folder: str | Path, ckn_fingerprint: str | None = None, *,
             feature_dim: int | None = None) -> FamiliarityModel | None:
        """The bank's familiarity statistics, or None when it has none (old banks) or they are for another CKN.

        Everything read is checked (:mod:`kf_model.serving.familiarity_files`): a hostile or broken file raises
        a :class:`CorruptWeightsError` that names it; ``feature_dim`` is the CKN's pooled feature width.
        """
        folder = Path(bank_folder) / FOLDER
        if not (folder / WEIGHTS).is_file() or not (folder / CONFIG).is_file():
            return None
        if (folder / CONFIG).stat().st_size > MAX_CONFIG_BYTES:
            raise CorruptWeightsError(f"{folder / CONFIG}: larger than {MAX_CONFIG_BYTES // 1024} KB")
        if (folder / WEIGHTS).stat().st_size > MAX_WEIGHTS_BYTES:
            raise CorruptWeightsError(f"{folder / WEIGHTS}: larger than {MAX_WEIGHTS_BYTES // 2**20} MB, more than "
                                      f"statistics of {MAX_DIM} features can take")
        try:
            config = json.loads((folder / CONFIG).read_text())
            tensors = load_file(str(folder / WEIGHTS))
        except Exception as error:  # safetensors' own error type, OSError, JSON, recursion
            raise CorruptWeightsError(f"cannot read the familiarity statistics in {folder}: {error}") from error
        checked = check_config(config, folder / CONFIG, method=METHOD)
        mean, precision, reference = check_tensors(tensors, folder / WEIGHTS, dim=checked.get("dim"),
                                                   feature_dim=feature_dim)
        if ckn_fingerprint and config.get("ckn_fingerprint") not in (None, ckn_fingerprint):
            log.warning("%s: familiarity statistics belong to another CKN; ignored", folder)
            return None
        block = checked["input_signals"]
        limits = SignalLimits(block["limits"]) if block is not None and block["applies"] else None
        info = {k: v for k, v in config.items() if k not in ("method", "threshold", "flag_rate", "dim")}
        return cls(mean, precision, reference, checked["threshold"], checked["flag_rate"], info, limits)


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
              input_description: str | None = None, photographs: bool = False) -> dict[str, Any]:
    """Fit a bank's familiarity statistics on its dataset and add them to the bank folder.

    Only ``familiarity/`` is written and ``factors.json`` gains two keys; the weights are untouched.
    The threshold and the pre-network signal limits use the first ``test_limit`` of a seeded shuffle of the
    test split (the bank's validation images here); the measure command reports on the next ones.
    ``photographs``: the bank's inputs are photographs, so the photo signals do not apply to it.
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
    signals = calibrate_signals(bank.input_spec, image_batches(test, calibration), photographs=photographs)
    model.info = {**(model.info or {}), "train_samples": len(train), "dataset": name, "seed": seed,
                  "ckn_fingerprint": bank.manifest.ckn_fingerprint,
                  "calibration": f"first {len(calibration)} of a seed-{seed} shuffle of the test split",
                  "input_signals": signals}
    model.save(folder)
    manifest_path = folder / MANIFEST_FILE
    raw = json.loads(manifest_path.read_text())
    raw["input_description"] = input_description or raw.get("input_description") or KNOWN_INPUTS.get(name) or \
        describe_input(bank.manifest)
    summary = {"file": f"{FOLDER}/{WEIGHTS}", "method": METHOD, "flag_rate": model.flag_rate,
               "threshold": round(model.threshold, 4), "train_samples": len(train),
               "reference_samples": int(model.reference.numel()), "input_signals": signals["applies"]}
    raw["familiarity"] = summary
    manifest_path.write_text(json.dumps(raw, indent=2))
    return summary


def recalibrate_signals(bank_folder: str | Path, *, photographs: bool = False,
                        data_dir: str | None = None) -> dict[str, Any]:
    """Refit only the pre-network signal limits of a calibrated bank (same validation images as its threshold);
    the feature statistics and the weights stay byte-identical."""
    folder = Path(bank_folder)
    bank = FactorBank.from_pretrained(folder)
    config_path = folder / FOLDER / CONFIG
    if FamiliarityModel.load(folder, feature_dim=sum(bank.ckn.feature_widths)) is None:
        raise KFError(f"{folder}: no familiarity statistics to add signal limits to; run calibrate first")
    config = json.loads(config_path.read_text())
    name = config.get("dataset") or bank.manifest.dataset
    if not isinstance(name, str) or not name:
        raise KFError(f"{config_path}: names no dataset")
    test = load_dataset(name, "test", root=data_dir)
    calibration, _ = split_positions(len(test), int(config["reference_samples"]), 0, int(config.get("seed", 0)))
    config["input_signals"] = calibrate_signals(bank.input_spec, image_batches(test, calibration),
                                                photographs=photographs)
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    manifest_path = folder / MANIFEST_FILE
    raw = json.loads(manifest_path.read_text())
    raw.setdefault("familiarity", {})["input_signals"] = config["input_signals"]["applies"]
    manifest_path.write_text(json.dumps(raw, indent=2))
    return config["input_signals"]
