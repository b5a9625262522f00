"""A folder of images described by ``metadata.csv`` or ``metadata.jsonl`` (🤗 imagefolder's convention).

    DIR/metadata.csv        file_name,shape,scale[,split]      one row per image, one column per attribute
    DIR/<split>/metadata.csv                                    or one file per split folder

``file_name`` is the image's path relative to the metadata file's folder; every other column is a label
attribute and becomes one task (the multi-attribute setting, as CelebA or dSprites), unless
``label_columns`` picks some; an optional ``split`` column (train / val / test) assigns rows to splits.
Values are read as text and each column's classes are its distinct values in natural order ("2" before
"10"). With a single label column, ``task_mode`` decides between one-vs-rest and one K-way task.

Refused before anything is trained, with the metadata line: a file name that leaves the folder ("..",
absolute, a link outside), a file that does not exist, an empty label, a file named twice.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from kf_model.data.images import ImageFiles, LabelledImages, build_split, checked_file_name, resolve_root
from kf_model.data.options import SourceOptions
from kf_model.data.splits import SPLIT_ALIASES
from kf_model.data.tasks import class_codes, pick_columns
from kf_model.errors import DataNotFoundError, InvalidDataError, name_list

METADATA_NAMES = ("metadata.csv", "metadata.jsonl")
FILE_COLUMN = "file_name"
SPLIT_COLUMN = "split"


def metadata_files(root: Path) -> dict[Path, str | None]:
    """The metadata files of `root` (at its top, else one per split folder), with the split each one gives."""
    found = [root / name for name in METADATA_NAMES if (root / name).is_file()]
    if len(found) > 1:
        raise InvalidDataError(f"{root} has both metadata.csv and metadata.jsonl; keep one of them")
    if found:
        return {found[0]: None}
    files: dict[Path, str | None] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name.lower() in SPLIT_ALIASES):
        inside = [folder / name for name in METADATA_NAMES if (folder / name).is_file()]
        if len(inside) > 1:
            raise InvalidDataError(f"{folder} has both metadata.csv and metadata.jsonl; keep one of them")
        files.update({path: SPLIT_ALIASES[folder.name.lower()] for path in inside})
    return files


def has_metadata(root: str | os.PathLike) -> bool:
    return bool(metadata_files(Path(root)))


def _text(value: Any, where: str) -> str | None:
    """A label read as text: numbers and booleans as JSON writes them, empty for missing."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        text = str(value).strip()
        return text or None
    raise InvalidDataError(f"{where}: a label must be text or a number, got {type(value).__name__}")


def read_rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str | None]]]]:
    """The columns and the ``(line number, row)`` pairs of a metadata.csv or .jsonl file; a file that is not
    UTF-8, a CSV value over the csv module's field limit or a JSON line nested too deep is refused by name."""
    try:
        return _read_rows(path)
    except UnicodeDecodeError as error:
        raise InvalidDataError(f"{path}: not UTF-8 text (byte {error.start:,} is {error.object[error.start]:#04x}); "
                               "save it as UTF-8") from None
    except csv.Error as error:  # e.g. "field larger than field limit (131072)"
        raise InvalidDataError(f"{path}: not a CSV file kf can read ({error})") from None
    except RecursionError:
        raise InvalidDataError(f"{path}: a JSON line is nested too deeply; each line must be a flat JSON object "
                               "of file_name and labels") from None


def _read_rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str | None]]]]:
    rows: list[tuple[int, dict[str, str | None]]] = []
    with open(path, encoding="utf-8-sig", newline="") as file:
        if path.suffix == ".csv":
            reader = csv.DictReader(file)
            columns = [c.strip() for c in reader.fieldnames or []]
            for row in reader:
                if None in row:
                    raise InvalidDataError(f"{path}, line {reader.line_num}: more values than the {len(columns)} "
                                           "columns of the header")
                rows.append((reader.line_num, {c.strip(): _text(v, f"{path}, line {reader.line_num}")
                                               for c, v in row.items()}))
        else:
            columns = []
            for number, line in enumerate(file, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise InvalidDataError(f"{path}, line {number}: not JSON ({error.msg})") from None
                if not isinstance(record, dict):
                    raise InvalidDataError(f"{path}, line {number}: each line must be a JSON object")
                columns += [c for c in record if c not in columns]
                rows.append((number, {c: _text(v, f"{path}, line {number}") for c, v in record.items()}))
    if len(set(columns)) != len(columns):
        raise InvalidDataError(f"{path}: a column is named twice in {name_list(columns)}")
    return columns, rows


def _refuse(problem: str, where: list[str], fix: str) -> None:
    if where:
        more = f" and {len(where) - 5:,} more" if len(where) > 5 else ""
        error = DataNotFoundError if problem.startswith("missing") else InvalidDataError
        raise error(f"{problem} in {len(where):,} row(s): {'; '.join(where[:5])}{more}. {fix}")


def open_metadata(root: str | os.PathLike, options: SourceOptions) -> LabelledImages:
    """The `options.split` split of a folder with metadata.csv / metadata.jsonl (see the module docstring)."""
    root = resolve_root(root)
    sources = metadata_files(root)
    if not sources:
        raise DataNotFoundError(f"{root} has no metadata.csv or metadata.jsonl")
    files: list[str] = []
    given: list[str | None] = []
    labels: list[list[str | None]] = []
    missing: list[str] = []
    empty: list[str] = []
    columns_seen: list[str] | None = None
    label_columns: list[str] = []
    for path, folder_split in sources.items():
        columns, rows = read_rows(path)
        if FILE_COLUMN not in columns:
            raise InvalidDataError(f"{path} has no {FILE_COLUMN!r} column (the path of each image); its columns "
                                   f"are {name_list(columns, 12)}")
        if columns_seen is None:
            attributes = [c for c in columns if c not in (FILE_COLUMN, SPLIT_COLUMN)]
            if not attributes:  # pick_columns would list no columns at all: say what is there and what is missing
                raise InvalidDataError(f"{path} has no label column, only {name_list(columns)}: add one (e.g. "
                                       f"{FILE_COLUMN},class with a class name per image), or read the images "
                                       "without labels (--unlabelled, for train/factorize.py --task-map)")
            label_columns = pick_columns(attributes, options.label_columns, attributes, str(path))
            columns_seen = columns
        elif set(columns) != set(columns_seen):
            raise InvalidDataError(f"{path} has the columns {name_list(columns)}, unlike {name_list(columns_seen)} "
                                   f"in the first metadata file; give every split the same columns")
        base = path.parent
        for line, row in rows:
            where = f"{path.relative_to(root)}, line {line}"
            name = checked_file_name(base, row.get(FILE_COLUMN), where)
            key = (base / name).relative_to(root).as_posix()
            if not (root / key).is_file():
                missing.append(f"{where}: {name[:100]!r}")
            values = [row.get(c) for c in label_columns]
            empty += [f"{where}: {c!r}" for c, v in zip(label_columns, values) if v is None]
            split = row.get(SPLIT_COLUMN) if folder_split is None else folder_split
            if split is not None and split.lower() not in SPLIT_ALIASES:
                raise InvalidDataError(f"{where}: unknown split {split!r}; use train, val or test")
            files.append(key)
            given.append(split)
            labels.append(values)
    _refuse("missing image files", missing, "Fix the file_name column or add the files")
    _refuse("empty labels", empty, "Fill them in, or drop those rows")
    if not files:
        raise DataNotFoundError(f"{name_list(str(p) for p in sources)} list no images")
    if len(set(files)) != len(files):
        twice = sorted(f for f, n in Counter(files).items() if n > 1)
        raise InvalidDataError(f"{root}: metadata names the same file twice ({name_list(twice)}); one row per image")
    where = f"the metadata of {root}"
    encoded = [class_codes([row[i] for row in labels], column, where) for i, column in enumerate(label_columns)]
    codes = torch.stack([c for _, c in encoded], dim=1)
    dataset = build_split(ImageFiles(root, files), codes, [a for a, _ in encoded], keys=files, given=given,
                          options=options, source=str(root))
    dataset.split_info = {**dataset.split_info, "layout": "metadata", "metadata": [p.name for p in sources]}
    return dataset


__all__ = ["METADATA_NAMES", "has_metadata", "metadata_files", "open_metadata", "read_rows"]
