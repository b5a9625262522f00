"""Train/val/test splits that depend on this code only (never on a library's RNG stream), and seeded subsets.

A source whose data comes without some split (no ``val/`` folder, no ``split`` column, a 🤗 dataset with
only ``train``) carves the missing ones out of ``train``: ``round(n * fraction)`` items each, shared among
the classes in proportion (stratified); within a class, items are ranked by a hash of ``(seed, its key)``
(a file's path, a row's index), the first go to ``test``, the next to ``val``. The same files and seed
give the same split on any machine, whatever order the file system lists them in; `split_info` records
how it was made. `seeded_subset` (``limit=``) is torch's seeded permutation, as `load_dataset` has used.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from kf_model.errors import InvalidArgumentError, InvalidConfigError, InvalidDataError, UnknownNameError

SPLIT_NAMES = ("train", "val", "test")
VALIDATION_SEED = 20220707  # the validation carve-out of the train split (training.data) never depends on --seed
# Names other tools give the validation split (🤗 datasets: "validation"; many folders: "valid", "dev").
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "dev": "val", "test": "test", "testing": "test"}


def validation_order(n: int) -> torch.Tensor:
    """A train split of ``n`` items in the order whose first ``val_size`` are the validation carve-out that no
    training stage sees (``load_training_data``) and the rest the training pool."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(VALIDATION_SEED))


def seeded_subset(n: int, limit: int | None, seed: int = 0) -> torch.Tensor | None:
    """Sorted positions of a random subset of size `limit` out of `n`, the same for the same seed (None: all)."""
    if limit is None:
        return None
    if limit <= 0:
        raise InvalidArgumentError(f"limit must be a positive number of items, got {limit}")
    if limit >= n:
        return None
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=generator)[:limit].sort().values


def check_split(split: str) -> str:
    """"train", "val" or "test" (the aliases above are accepted and mapped)."""
    if not isinstance(split, str) or split.lower() not in SPLIT_ALIASES:
        raise UnknownNameError(f"unknown split {split!r}; known splits: {', '.join(SPLIT_NAMES)}")
    return SPLIT_ALIASES[split.lower()]


def check_fractions(val_fraction: float, test_fraction: float) -> dict[str, float]:
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
            raise InvalidConfigError(f"{name} must be a number in [0, 1), got {value!r}")
    if val_fraction + test_fraction >= 1:
        raise InvalidConfigError(f"val_fraction + test_fraction must leave items for training, got "
                                 f"{val_fraction} + {test_fraction}")
    return {"val": float(val_fraction), "test": float(test_fraction)}


def _rank(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}\0{key}".encode(), digest_size=8).digest(), "big")


def _quotas(sizes: dict[Any, int], fraction: float, seed: int) -> dict[Any, int]:
    """Items per stratum for one carved split: ``round(total * fraction)`` in all, shared by largest remainder.

    Small classes then still give a split its share (20 classes of 2 images and 10%: 4 items, not 0).
    """
    exact = {group: size * fraction for group, size in sizes.items()}
    quotas = {group: math.floor(value) for group, value in exact.items()}
    left = round(sum(sizes.values()) * fraction) - sum(quotas.values())
    ranked = sorted(sizes, key=lambda g: (quotas[g] - exact[g], _rank(seed, repr(g))))
    for group in ranked[:max(left, 0)]:
        quotas[group] += 1
    return quotas


def assign_splits(keys: Sequence[str], given: Sequence[str | None], strata: Sequence[Any], *,
                  val_fraction: float, test_fraction: float, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """The split ("train"/"val"/"test") of every item, and a JSON-able record of how it was made.

    `given[i]` is the item's own split (a split folder, a ``split`` column) or None. Splits that no item
    names are carved out of the items given as ``train`` (all items when none is given), per stratum
    (class), by the seeded hash rank; the fractions are of those items.
    """
    fractions = check_fractions(val_fraction, test_fraction)
    given = [None if s is None else check_split(s) for s in given]
    present = sorted({s for s in given if s is not None}, key=SPLIT_NAMES.index)
    if present and "train" not in present:
        raise InvalidDataError(f"the data names the splits {', '.join(present)} but no 'train' split; "
                               "add a train/ folder or 'train' rows")
    if present and None in given:
        raise InvalidDataError("some items name their split and others do not; give every item a split or none")
    carved = [s for s in ("val", "test") if s not in present]
    splits = np.array([s or "train" for s in given], dtype=object)
    groups: dict[Any, list[int]] = defaultdict(list)
    for i, (split, stratum) in enumerate(zip(splits, strata)):
        if split == "train" and carved:
            groups[stratum].append(i)
    quotas = {split: _quotas({g: len(m) for g, m in groups.items()}, fractions[split], seed) for split in carved}
    for group, members in groups.items():
        members.sort(key=lambda i: _rank(seed, keys[i]))
        start = 0
        for split in carved[::-1]:  # test first, then val
            count = max(min(quotas[split][group], len(members) - start - 1), 0)  # a class keeps a train item
            splits[members[start:start + count]] = split
            start += count
    counts = {s: int((splits == s).sum()) for s in SPLIT_NAMES}
    if not carved:
        info: dict[str, Any] = {"kind": "given", "counts": counts}
    else:
        info = {"kind": "given+seeded" if present else "seeded", "seed": seed, "carved": carved,
                "fractions": {s: fractions[s] for s in carved}, "stratified": len(groups) > 1, "counts": counts}
    return splits, info
