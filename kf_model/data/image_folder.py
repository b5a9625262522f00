"""An image-folder tree: one sub-folder per class (torchvision's ImageFolder and 🤗 imagefolder layout).

    DIR/<class>/**/<image>                       one pool: val and test are carved out of it (seeded)
    DIR/train/<class>/...  DIR/val/...  DIR/test/...   split folders ("validation"/"valid" name val too);
                                                  a missing val/ or test/ is carved out of train/

Classes are the class folder names over all splits, in natural order ("2" before "10", else alphabetical),
so train, val and test agree on the class indices. Files whose extension is not an image's, hidden files
and folders (".*") are left out; images directly in DIR (in no class folder) are counted and left out.
"""

from __future__ import annotations

import os
from pathlib import Path

from kf_model.data.images import IMAGE_EXTENSIONS, ImageFiles, LabelledImages, build_split, list_images, resolve_root
from kf_model.data.options import SourceOptions
from kf_model.data.splits import SPLIT_ALIASES
from kf_model.data.tasks import class_codes
from kf_model.errors import DataNotFoundError, InvalidDataError, name_list


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_dir())


def _loose_images(folder: Path) -> int:
    return sum(1 for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def split_folders(root: Path) -> dict[Path, str | None]:
    """The folders holding class folders, with the split each one is (None: no split folders)."""
    folders = _subfolders(root)
    splits = {f: SPLIT_ALIASES[f.name.lower()] for f in folders if f.name.lower() in SPLIT_ALIASES}
    if not splits:
        return {root: None}
    others = [f.name for f in folders if f not in splits]
    if others:
        raise InvalidDataError(f"{root} has split folders ({name_list(f.name for f in splits)}) and other folders "
                               f"({name_list(others)}); put the class folders inside the split folders")
    if len(set(splits.values())) != len(splits):
        raise InvalidDataError(f"{root} names one split twice ({name_list(f.name for f in splits)}); keep one "
                               "folder per split")
    return splits


def open_image_folder(root: str | os.PathLike, options: SourceOptions) -> LabelledImages:
    """The `options.split` split of the image-folder tree at `root` (see the module docstring)."""
    root = resolve_root(root)
    if options.label_columns is not None:
        raise InvalidDataError(f"label_columns are for a metadata.csv or a 🤗 dataset; {root} is a folder tree, "
                               "whose classes are its sub-folders (add a metadata.csv for several attributes)")
    files: list[str] = []
    classes: list[str] = []
    given: list[str | None] = []
    loose = 0
    for folder, split in split_folders(root).items():
        loose += _loose_images(folder)
        for class_folder in _subfolders(folder):
            found = list_images(class_folder, root)
            files += found
            classes += [class_folder.name] * len(found)
            given += [split] * len(found)
    if not files:
        extensions = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise DataNotFoundError(f"{root} holds no images in class folders: expected DIR/<class>/<image> (or "
                                f"DIR/train/<class>/<image>) with files of type {extensions}, or a metadata.csv")
    attribute, codes = class_codes(classes, "class", f"the image folder {root}",
                                   fix="add a folder of images of another class")
    dataset = build_split(ImageFiles(root, files), codes.unsqueeze(1), [attribute], keys=files, given=given,
                          options=options, source=str(root))
    dataset.split_info = {**dataset.split_info, "layout": "image-folder", "unlabelled_files": loose}
    return dataset


__all__ = ["open_image_folder", "split_folders"]
