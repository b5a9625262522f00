"""`open_dataset(source, split)`: any labelled images kf can train on, picked by the source's name.

=============================  ==============================================  ==============================
source                         what it is                                      module
=============================  ==============================================  ==============================
``"dsprites"``                 the built-in dSprites replica (5 attributes)    dsprites.py
``"fashion-mnist"``            the built-in Fashion-MNIST (10 classes)         fashion_mnist.py
``"hf:<repo or folder>[@rev]"``  a 🤗 dataset (``datasets.load_dataset``)       hf_datasets.py
a folder with metadata.csv     one row per image, one column per attribute     metadata.py
  or metadata.jsonl
any other folder               one sub-folder per class, split folders         image_folder.py
=============================  ==============================================  ==============================

Like timm's ``create_reader``, the name decides, and each heavy dependency (🤗 ``datasets``) is imported in
its own branch only. Every source gives the same items, ``(image float32 [C, H, W] in [0, 1], targets int64
[T])``, and the same attributes (``tasks``, ``input_spec``, ``one_vs_rest``, ``targets``, ``select``,
``get_batch``; ``class_names`` for a single label; ``split_info`` for sources from outside), so training
does not know where its images come from.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from torch.utils.data import Dataset

from kf_model.data.options import SourceOptions
from kf_model.data.specs import InputSpec
from kf_model.errors import DataNotFoundError, UnknownNameError
from kf_model.limits import MAX_IMAGE_PIXELS

BUILT_IN = ("dsprites", "fashion-mnist")
HF_PREFIX = "hf:"


def open_dataset(source: str | os.PathLike, split: str, *, input_spec: InputSpec | None = None,
                 task_mode: str = "one-vs-rest", label_columns: Sequence[str] | None = None,
                 image_column: str = "image", val_fraction: float = 0.1, test_fraction: float = 0.1,
                 split_seed: int = 0, limit: int | None = None, seed: int = 0,
                 root: str | os.PathLike | None = None, download: bool = False, skip_bad_images: bool = False,
                 streaming: bool = False, max_image_pixels: int = MAX_IMAGE_PIXELS) -> Dataset:
    """The `split` ("train", "val" or "test") of `source` (see the module docstring for the names).

    Built-ins are exactly `kf_model.data.load_dataset(source, split, root=, limit=, seed=, download=)`
    (splits "train" and "test"; the other options do not apply to them). For sources from outside:

    - `input_spec`: the network's channels, size and normalisation (from the teacher's config); images go
      through `kf_model.data.preprocess.image_to_tensor` with it. None: inferred from ≤ 1,000 training images
      (`kf_model.data.images.infer_input_spec`), recorded as ``split_info["input_spec_inferred"]``; open
      val and test with ``input_spec=train.input_spec`` to skip inferring it again.
    - `task_mode`: a single K-class label as K one-vs-rest tasks or one K-way task (`kf_model.data.tasks`).
    - `label_columns`, `image_column`: which columns of a metadata file / 🤗 dataset are used.
    - `val_fraction`, `test_fraction`, `split_seed`: how a missing val/test split is carved out of train.
    - `limit`, `seed`: a seeded subset of the split. `skip_bad_images`: skip images that fail the scan
      instead of refusing the data (`kf_model.data.images`); `max_image_pixels`: larger images fail the scan.
      `streaming`: 🤗 datasets only.
    - `root`: the built-ins' data folder, or the 🤗 datasets cache folder. `download`: built-ins only.
    """
    source = os.fspath(source) if isinstance(source, os.PathLike) else source
    if not isinstance(source, str) or not source:
        raise UnknownNameError(f"a data source must be a name or a folder, got {source!r}")
    if source in BUILT_IN:
        from kf_model.data import load_dataset

        return load_dataset(source, split, root=root, limit=limit, seed=seed, download=download)
    options = SourceOptions(split=split, input_spec=input_spec, task_mode=task_mode, label_columns=label_columns,
                            image_column=image_column, val_fraction=val_fraction, test_fraction=test_fraction,
                            split_seed=split_seed, limit=limit, seed=seed, skip_bad_images=skip_bad_images,
                            streaming=streaming, root=root, download=download, max_image_pixels=max_image_pixels)
    return open_source(source, options)


def open_source(source: str, options: SourceOptions) -> Dataset:
    """`open_dataset` for a source from outside, with its options as one `SourceOptions`."""
    if source.startswith(HF_PREFIX):
        from kf_model.data.hf_datasets import open_hf

        return open_hf(source, options)
    if options.streaming:
        raise UnknownNameError(f"streaming is for 🤗 datasets (hf:<name>), not {source!r}")
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise DataNotFoundError(f"unknown data source {source!r}: not a folder; use {', '.join(BUILT_IN)}, "
                                "a folder of images (one sub-folder per class, or a metadata.csv), "
                                "or hf:<dataset>")
    from kf_model.data.metadata import has_metadata

    if has_metadata(folder):
        from kf_model.data.metadata import open_metadata

        return open_metadata(folder, options)
    from kf_model.data.image_folder import open_image_folder

    return open_image_folder(folder, options)


__all__ = ["BUILT_IN", "open_dataset", "open_source"]
