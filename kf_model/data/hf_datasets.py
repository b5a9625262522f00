"""🤗 datasets as a source: ``hf:<repo id or local folder>[@revision]``, read with ``datasets.load_dataset``.

- A Hub repo id (``hf:org/name@rev``) is fetched into the datasets cache (``root`` sets ``cache_dir``;
  ``HF_HUB_OFFLINE=1`` serves only what is cached). A local folder is read by the builder that 🤗 datasets
  infers from its files (``imagefolder`` for class folders or a metadata.csv, parquet...); a folder written
  by ``save_to_disk`` is read with ``load_from_disk``.
- Images: the ``image_column`` (default "image"; when absent, the only ``Image`` column). Labels:
  ``label_columns``, by default every ``ClassLabel`` column (its names are the class names, in its order),
  else the ``label`` column; a column of plain values gets its distinct values as classes (natural order).
- Splits: the dataset's own ("validation"/"valid" are val); a missing val or test is carved out of train,
  seeded, as for folders. Rows labelled -1 (🤗's "no label") are refused in the split asked for.

Streaming (``streaming=True``) is for sets that do not fit on disk: `open_dataset` then returns an
`HFStream`, a torch ``IterableDataset`` of the same items and ``.tasks`` / ``.input_spec``, read as it
is downloaded, with no length, ``targets``, ``select`` or ``get_batch`` (those need the whole set). It
needs ``ClassLabel`` labels (class names known without reading the data) and the split itself (nothing can
be carved out of a stream); ``limit`` takes the first items. DataLoader workers each read their own shards
(🤗's own sharding, so use at most ``num_shards`` workers). Without an ``input_spec``, it is inferred
from the first 256 training items. An image kf cannot convert is skipped with a warning; one that 🤗
datasets itself cannot decode raises its error (datasets decodes an item before kf sees it).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import IterableDataset

from kf_model.data.images import LabelledImages, build_split, infer_input_spec
from kf_model.data.options import SourceOptions
from kf_model.data.preprocess import image_to_tensor
from kf_model.data.specs import InputSpec
from kf_model.data.splits import SPLIT_ALIASES
from kf_model.data.tasks import Attribute, class_codes, encode_targets, make_tasks, pick_columns
from kf_model.errors import DataNotFoundError, InvalidDataError, UnknownNameError, name_list
from kf_model.limits import MAX_TRAINING_IMAGE_PIXELS

PREFIX = "hf:"
STREAM_SPEC_SAMPLE = 256


def parse_name(source: str) -> tuple[str, str | None]:
    """``"hf:org/name@rev"`` -> ``("org/name", "rev")``; a local folder may hold an '@' (it wins if it exists)."""
    name = source[len(PREFIX):] if source.startswith(PREFIX) else source
    if not name:
        raise UnknownNameError("an empty 🤗 dataset name: use hf:<org>/<name>[@revision] or hf:<local folder>")
    if "@" in name and not Path(name).expanduser().exists():
        name, revision = name.rsplit("@", 1)
        return name, revision or None
    return name, None


class HFImages:
    """Rows of the splits of a 🤗 ``DatasetDict``, opened as PIL images from one column (picklable: arrow files)."""

    def __init__(self, tables: dict[str, Any], column: str, rows: Sequence[tuple[str, int]]) -> None:
        self.tables = tables
        self.column = column
        self.rows = list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def name(self, position: int) -> str:
        split, row = self.rows[position]
        return f"{split}[{row}]"

    def open(self, position: int):
        split, row = self.rows[position]
        image = self.tables[split][row][self.column]
        if image is None:
            raise InvalidDataError(f"{self.name(position)} has no image")
        return image

    def describe(self, position: int) -> tuple[str, tuple[int, int]]:
        image = self.open(position)
        return image.mode, image.size

    def select(self, positions: Sequence[int]) -> HFImages:
        return HFImages(self.tables, self.column, [self.rows[int(i)] for i in positions])


def _import_datasets():
    try:
        import datasets  # heavy (pyarrow, pandas): only for hf: sources
    except ImportError as error:
        raise DataNotFoundError("hf: sources need 🤗 datasets: pip install 'datasets>=5,<6'") from error
    return datasets


def _load(name: str, revision: str | None, options: SourceOptions):
    datasets = _import_datasets()

    local = Path(name).expanduser()
    try:
        if local.is_dir() and any((local / f).is_file() for f in ("dataset_dict.json", "state.json")):
            if options.streaming:
                raise InvalidDataError(f"{local} was written by save_to_disk: it is on disk already, open it "
                                       "without streaming")
            loaded = datasets.load_from_disk(str(local))
        else:
            cache = None if options.root is None else str(options.root)
            loaded = datasets.load_dataset(str(local) if local.is_dir() else name, revision=revision,
                                           cache_dir=cache, streaming=options.streaming)
    except InvalidDataError:
        raise
    except Exception as error:  # datasets raises many kinds; all mean "cannot be read"
        raise DataNotFoundError(f"🤗 datasets cannot load {name!r}{'@' + revision if revision else ''}: "
                                f"{type(error).__name__}: {str(error)[:300]}") from error
    if isinstance(loaded, datasets.Dataset | datasets.IterableDataset):
        loaded = {"train": loaded}
    return dict(loaded)


def _splits(loaded: dict[str, Any], name: str) -> dict[str, str]:
    """kf split -> the dataset's split name, for the splits it has (others, e.g. "unsupervised", are left out)."""
    splits: dict[str, str] = {}
    for split in loaded:
        ours = SPLIT_ALIASES.get(split.lower())
        if ours is not None and ours not in splits:
            splits[ours] = split
    if "train" not in splits:
        raise DataNotFoundError(f"{name} has no train split; its splits are {name_list(loaded)}")
    return splits


def _columns(features: Any, options: SourceOptions, where: str) -> tuple[str, list[str]]:
    import datasets

    columns = list(features)
    images = [c for c in columns if isinstance(features[c], datasets.Image)]
    image_column = options.image_column
    if image_column not in columns and options.image_column == "image" and len(images) == 1:
        image_column = images[0]
    if image_column not in columns:
        raise UnknownNameError(f"{where}: no image column {options.image_column!r}; the columns are "
                               f"{name_list(columns, 12)} (pick one with image_column)")
    if not isinstance(features[image_column], datasets.Image):
        raise InvalidDataError(f"{where}: the column {image_column!r} holds {features[image_column]!r}, not images")
    others = [c for c in columns if c != image_column]
    default = [c for c in others if isinstance(features[c], datasets.ClassLabel)] or (
        ["label"] if "label" in others else [])
    return image_column, pick_columns(others, options.label_columns, default, where)


def _attribute(tables: dict[str, Any], column: str, where: str) -> tuple[Attribute, torch.Tensor]:
    """One label column over all splits (in `tables` order): its classes and class indices (-1: no label)."""
    import datasets

    feature = next(iter(tables.values())).features[column]
    values = [v for table in tables.values() for v in table.select_columns([column])[column]]
    if isinstance(feature, datasets.ClassLabel):
        if len(feature.names) < 2:
            raise InvalidDataError(f"{where}: the label {column!r} has {len(feature.names)} class; a task needs 2")
        return Attribute(column, tuple(feature.names)), torch.tensor(values, dtype=torch.int64)
    empty = sum(v is None or str(v).strip() == "" for v in values)
    if empty:
        raise InvalidDataError(f"{where}: {empty:,} rows have no {column!r} value; drop them or fill them in")
    return class_codes([str(v).strip() for v in values], column, where)


def open_hf(source: str, options: SourceOptions) -> LabelledImages | HFStream:
    """The `options.split` split of a 🤗 dataset (see the module docstring)."""
    name, revision = parse_name(source)
    loaded = _load(name, revision, options)
    splits = _splits(loaded, source)
    image_column, label_columns = _columns(loaded[splits["train"]].features, options, source)
    if options.streaming:
        return HFStream(loaded, splits, image_column, label_columns, options, source)
    tables = {s: loaded[s].select_columns([image_column]) for s in splits.values()}
    full = {s: loaded[s] for s in splits.values()}
    encoded = [_attribute(full, column, source) for column in label_columns]
    codes = torch.stack([c for _, c in encoded], dim=1)
    ours = {theirs: mine for mine, theirs in splits.items()}
    rows = [(s, i) for s in tables for i in range(len(tables[s]))]
    dataset = build_split(HFImages(tables, image_column, rows), codes, [a for a, _ in encoded],
                          keys=[f"{s}/{i}" for s, i in rows], given=[ours[s] for s, _ in rows],
                          options=options, source=source)
    unlabelled = int((dataset.codes < 0).any(dim=1).sum())
    if unlabelled:
        raise InvalidDataError(f"{source}: {unlabelled:,} rows of the {options.split} split have no label (-1); "
                               "this split cannot be trained or evaluated on")
    dataset.split_info = {**dataset.split_info, "layout": "hf", "revision": revision,
                          "hf_splits": {mine: theirs for mine, theirs in splits.items()}}
    return dataset


class HFStream(IterableDataset):
    """Items ``(image [C, H, W], targets [T])`` of a streamed 🤗 split, in the dataset's order."""

    def __init__(self, loaded: dict[str, Any], splits: dict[str, str], image_column: str,
                 label_columns: list[str], options: SourceOptions, source: str) -> None:
        import datasets

        if options.split not in splits:
            raise DataNotFoundError(f"{source} has no {options.split} split ({name_list(loaded)}); a stream cannot "
                                    "be split: open it without streaming, or pick a split it has")
        features = loaded[splits["train"]].features
        not_classes = [c for c in label_columns if not isinstance(features[c], datasets.ClassLabel)]
        if not_classes:
            raise InvalidDataError(f"{source}: streaming needs ClassLabel label columns (class names known "
                                   f"before reading); {name_list(not_classes)} are not")
        self.attributes = [Attribute(c, tuple(features[c].names)) for c in label_columns]
        self.tasks, self.one_vs_rest = make_tasks(self.attributes, options.task_mode)
        self.class_names = self.attributes[0].classes if len(self.attributes) == 1 else None
        self.image_column, self.label_columns = image_column, label_columns
        self.split, self.source = options.split, source
        stream = loaded[splits[options.split]]
        self.stream = stream if options.limit is None else stream.take(options.limit)
        self.split_info = {"kind": "given", "layout": "hf-stream", "hf_split": splits[options.split]}
        self.input_spec: InputSpec = options.input_spec or self._infer(loaded[splits["train"]], options.split_seed)

    def _infer(self, train: Any, seed: int) -> InputSpec:
        images = [example[self.image_column] for example in train.take(STREAM_SPEC_SAMPLE)]
        return infer_input_spec(_ListImages(images), seed=seed)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for example in self.stream:
            codes = torch.tensor([[example[c] for c in self.label_columns]], dtype=torch.int64)
            if (codes < 0).any():
                continue  # 🤗's "no label"
            try:
                image = image_to_tensor(example[self.image_column], self.input_spec,
                                        max_pixels=MAX_TRAINING_IMAGE_PIXELS)[0]
            except Exception as error:  # one bad image never ends a pass over a stream
                warnings.warn(f"{self.source}: skipped an image that cannot be decoded ({error})", RuntimeWarning,
                              stacklevel=2)
                continue
            yield image, encode_targets(codes, self.attributes, self.one_vs_rest)[0]


class _ListImages:
    def __init__(self, images: list) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def open(self, position: int):
        return self.images[position]

    def describe(self, position: int) -> tuple[str, tuple[int, int]]:
        return self.images[position].mode, self.images[position].size


__all__ = ["PREFIX", "HFImages", "HFStream", "open_hf", "parse_name"]
