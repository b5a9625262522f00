"""open_dataset on real files: image folders, metadata.csv/.jsonl, 🤗 datasets (local), bad input, workers, export."""

from __future__ import annotations

import csv
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kf_model.data import (
    FASHION_MNIST_INPUT_SPEC,
    FASHION_MNIST_SLUGS,
    InputSpec,
    load_dataset,
    open_dataset,
    slugify,
)
from kf_model.data.__main__ import main as data_cli
from kf_model.data.specs import validate_task_name
from kf_model.data.tasks import Attribute, make_tasks
from kf_model.errors import (
    DataNotFoundError,
    InvalidDataError,
    InvalidTaskNameError,
    KFError,
    UnknownNameError,
    UnsafePathError,
)

GREY_SPEC = InputSpec(channels=1, size=28, mean=(0.5,), std=(0.5,))


def _image(path: Path, mode: str = "L", size: tuple[int, int] = (28, 28), value: int = 0) -> Path:
    """A small image with some structure (a gradient plus `value`), so decoding it is a real check."""
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    ramp = (np.add.outer(np.arange(height), np.arange(width)) * 3 + value) % 256
    if mode == "I;16":
        Image.fromarray(ramp.astype(np.uint16) * 257).save(path)
        return path
    grey = Image.fromarray(ramp.astype(np.uint8))
    grey.convert(mode).save(path)
    return path


def _tree(root: Path, classes: dict[str, int], split: str | None = None, ext: str = ".png", mode: str = "L") -> Path:
    for name, count in classes.items():
        for i in range(count):
            _image(root / (split or "") / name / f"{i:03d}{ext}", mode, value=17 * i + len(name))
    return root


@pytest.fixture(scope="module")
def fm_png(tmp_path_factory) -> Path:
    """Fashion-MNIST exported through the CLI as a folder tree of grey PNGs (100 items per split)."""
    out = tmp_path_factory.mktemp("export") / "fashion-png"
    assert data_cli(["export", "fashion-mnist", "--out", str(out), "--limit", "100"]) == 0
    return out


@pytest.fixture(scope="module")
def dsprites_csv(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "dsprites-csv"
    assert data_cli(["export", "dsprites", "--out", str(out), "--format", "csv", "--limit", "60"]) == 0
    return out


# ----------------------------------------------------------------------------- names and tasks

def test_slugify_gives_valid_task_names():
    assert [slugify(c) for c in ("T-shirt/top", "Ankle boot", "  Pos--X ", "Café", "猫", "con")] == [
        "t_shirt_top", "ankle_boot", "pos_x", "cafe", "u732b", "con_"]
    assert len(slugify("x" * 500)) == 64
    for text in ("A", "9°", "a/../b", "NUL", "x" * 300, "Über-Größe"):
        assert validate_task_name(slugify(text)) == slugify(text)
    with pytest.raises(InvalidTaskNameError, match="no letter or digit"):
        slugify("°/-")


def test_two_classes_with_the_same_slug_are_refused_by_name():
    with pytest.raises(InvalidDataError, match="'Red car' and 'red-car'"):
        make_tasks([Attribute("class", ("Red car", "red-car"))], "one-vs-rest")
    tasks, one_vs_rest = make_tasks([Attribute("colour", ("red", "blue"))], "kway")
    assert [t.name for t in tasks] == ["colour"] and tasks[0].labels == ("red", "blue") and not one_vs_rest


# ----------------------------------------------------------------------------- export round trips

def test_folder_export_gives_the_built_in_items(fm_png):
    """PNG is lossless: the same images, pixel for pixel, and the same classes, in both task modes."""
    built_in = load_dataset("fashion-mnist", "test")
    ovr = open_dataset(str(fm_png), "test", input_spec=FASHION_MNIST_INPUT_SPEC)
    assert ovr.one_vs_rest and sorted(t.name for t in ovr.tasks) == sorted(FASHION_MNIST_SLUGS)
    assert len(ovr) == 100 and ovr.split_info["counts"]["test"] == 100
    positions = [int(Path(f).stem) for f in ovr.files]
    images, targets = ovr.get_batch(range(len(ovr)))
    expected_images, expected_targets = built_in.get_batch(positions)
    assert torch.equal(images, expected_images)
    ours = [ovr.tasks[i].name for i in targets.argmax(dim=1).tolist()]
    assert ours == [FASHION_MNIST_SLUGS[i] for i in expected_targets.argmax(dim=1).tolist()]
    assert torch.equal(targets, ovr.targets) and targets.dtype == torch.int64
    kway = open_dataset(str(fm_png), "test", input_spec=FASHION_MNIST_INPUT_SPEC, task_mode="kway")
    assert [t.name for t in kway.tasks] == ["class"] and not kway.one_vs_rest
    assert kway.tasks[0].labels == kway.class_names and "T-shirt-top" in kway.class_names
    assert kway.targets.shape == (100, 1) and torch.equal(kway.targets[:, 0], ovr.targets.argmax(dim=1))


def test_csv_export_gives_the_built_in_attributes(dsprites_csv):
    built_in = load_dataset("dsprites", "train")
    dataset = open_dataset(str(dsprites_csv), "train", val_fraction=0.0)  # input spec inferred
    assert [t.name for t in dataset.tasks] == ["shape", "scale", "orientation", "pos_x", "pos_y"]
    assert not dataset.one_vs_rest and dataset.class_names is None and len(dataset) == 60
    assert dataset.input_spec.channels == 1 and dataset.input_spec.size == 64
    assert dataset.split_info["input_spec_inferred"] and dataset.split_info["layout"] == "metadata"
    positions = [int(Path(f).stem) for f in dataset.files]
    images, targets = dataset.get_batch(range(len(dataset)))
    expected_images, expected_targets = built_in.get_batch(positions)
    assert torch.equal(images, expected_images)
    for ours, theirs in zip(targets.tolist(), expected_targets.tolist()):
        assert [t.labels[i] for t, i in zip(dataset.tasks, ours)] == [
            t.labels[i] for t, i in zip(built_in.tasks, theirs)]
    picked = open_dataset(str(dsprites_csv), "test", label_columns=["shape"], task_mode="kway")
    assert [t.name for t in picked.tasks] == ["shape"] and picked.class_names == ("ellipse", "heart", "square")
    with pytest.raises(UnknownNameError, match=r"'colour'.*the columns are 'shape', 'scale'"):
        open_dataset(str(dsprites_csv), "train", label_columns=["colour"])


def test_fashion_mnist_csv_export_keeps_the_built_in_task_labels(tmp_path):
    out = tmp_path / "fashion-csv"
    assert data_cli(["export", "fashion-mnist", "--out", str(out), "--format", "csv", "--limit", "40"]) == 0
    dataset = open_dataset(str(out), "test", input_spec=FASHION_MNIST_INPUT_SPEC)
    built_in = load_dataset("fashion-mnist", "test")
    tasks = {t.name: t for t in built_in.tasks}
    assert all(t.labels == tasks[t.name].labels for t in dataset.tasks)  # ("not T-shirt/top", "T-shirt/top")
    positions = [int(Path(f).stem) for f in dataset.files]
    ours = [dataset.tasks[i].name for i in dataset.targets.argmax(dim=1).tolist()]
    assert ours == [FASHION_MNIST_SLUGS[i] for i in built_in.class_indices[positions].tolist()]
    with pytest.raises(InvalidDataError, match=r"label_columns are for a metadata\.csv"):
        open_dataset(str(out / "test"), "train", label_columns=["class"])


def test_jpeg_rgb_export_reads_as_three_channel_images(tmp_path):
    out = tmp_path / "rgb-jpeg"
    assert data_cli(["export", "fashion-mnist", "--out", str(out), "--image-format", "jpeg", "--rgb",
                     "--limit", "20", "--split", "test"]) == 0
    assert {p.suffix for p in out.rglob("*.*")} == {".jpg"}
    with pytest.raises(InvalidDataError, match="splits test but no 'train' split"):
        open_dataset(str(out), "test")
    dataset = open_dataset(str(out / "test"), "train", val_fraction=0.0, test_fraction=0.2)  # a pool: carved
    assert dataset.input_spec.channels == 3 and dataset.input_spec.size == 28 and len(dataset) < 20
    grey = open_dataset(str(out / "test"), "test", val_fraction=0.0, input_spec=FASHION_MNIST_INPUT_SPEC)
    positions = [int(Path(f).stem) for f in grey.files]
    images, _ = grey.get_batch(range(len(grey)))
    expected, _ = load_dataset("fashion-mnist", "test").get_batch(positions)
    assert (images - expected).abs().mean() < 0.03  # JPEG is lossy, but it is the same picture


def test_dsprites_has_no_folder_format(tmp_path):
    assert data_cli(["export", "dsprites", "--out", str(tmp_path / "x"), "--limit", "3"]) == 1


# ----------------------------------------------------------------------------- splits

def test_seeded_split_is_stratified_deterministic_and_recorded(tmp_path):
    root = _tree(tmp_path / "pool", {"cat": 20, "dog": 30})
    parts = {s: open_dataset(str(root), s, input_spec=GREY_SPEC, split_seed=5) for s in ("train", "val", "test")}
    files = {s: set(d.files) for s, d in parts.items()}
    assert sum(map(len, files.values())) == 50 and not (files["train"] & files["val"] or files["val"] & files["test"])
    assert [len(files[s]) for s in ("train", "val", "test")] == [40, 5, 5]
    assert parts["test"].class_indices.bincount().tolist() == [2, 3]  # 10% of each class
    info = parts["val"].split_info
    assert info["kind"] == "seeded" and info["seed"] == 5 and info["counts"] == {"train": 40, "val": 5, "test": 5}
    assert files["test"] == set(open_dataset(str(root), "test", input_spec=GREY_SPEC, split_seed=5).files)
    assert files["test"] != set(open_dataset(str(root), "test", input_spec=GREY_SPEC, split_seed=6).files)
    record = json.loads(json.dumps(parts["test"].describe()))
    assert record["split_info"] == info and record["items"] == 5 and record["input_spec"]["size"] == 28
    limited = open_dataset(root, "train", input_spec=GREY_SPEC, split_seed=5, limit=7, seed=1)  # a Path works
    assert len(limited) == 7 and set(limited.files) <= files["train"]


def test_split_folders_are_used_as_given(tmp_path):
    root = tmp_path / "splits"
    for split, count in (("train", 4), ("validation", 2), ("test", 3)):
        _tree(root, {"a": count, "b": count}, split)
    sizes = {s: len(open_dataset(str(root), s, input_spec=GREY_SPEC)) for s in ("train", "val", "test")}
    assert sizes == {"train": 8, "val": 4, "test": 6}
    assert open_dataset(str(root), "val", input_spec=GREY_SPEC).split_info["kind"] == "given"
    shutil.rmtree(root / "validation")
    val = open_dataset(str(root), "val", input_spec=GREY_SPEC, val_fraction=0.25)  # carved out of train/
    assert val.split_info["kind"] == "given+seeded" and len(val) == 2
    with pytest.raises(DataNotFoundError, match="val split has no images"):
        open_dataset(str(root), "val", input_spec=GREY_SPEC, val_fraction=0.0)


# ----------------------------------------------------------------------------- metadata.jsonl, mixed images

def test_metadata_jsonl_with_split_column_and_mixed_images(tmp_path):
    root = tmp_path / "jsonl"
    rows = []
    for i, (mode, size) in enumerate([("L", (28, 28)), ("RGB", (40, 30)), ("RGBA", (20, 50)), ("P", (64, 64)),
                                      ("I;16", (16, 16)), ("RGB", (33, 33)), ("L", (10, 90)), ("RGB", (28, 28))]):
        _image(root / "images" / f"{i}.png", mode, size, value=i)
        rows.append({"file_name": f"images/{i}.png", "split": "train" if i < 6 else "test",
                     "size": ["small", "large"][i % 2], "count": [2, 10, 1][i % 3]})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset = open_dataset(str(root), "train", input_spec=InputSpec(3, 32, (0.5,) * 3, (0.5,) * 3), val_fraction=0)
    assert [t.name for t in dataset.tasks] == ["size", "count"] and dataset.tasks[1].labels == ("1", "2", "10")
    images, targets = dataset.get_batch(range(len(dataset)))
    assert images.shape == (6, 3, 32, 32) and images.min() >= 0 and images.max() <= 1
    assert targets.tolist() == [[1, 1], [0, 2], [1, 0], [0, 1], [1, 2], [0, 0]]
    assert len(open_dataset(str(root), "test", input_spec=GREY_SPEC)) == 2
    inferred = open_dataset(str(root), "train", val_fraction=0)
    assert inferred.input_spec.channels == 3  # 2 of the 6 train images are grey (L, I;16)


def test_one_metadata_csv_per_split_folder(tmp_path):
    """🤗 imagefolder's other layout: DIR/<split>/metadata.csv, file names relative to that folder."""
    root = tmp_path / "per-split"
    for split, count in (("train", 6), ("test", 2)):
        rows = [["file_name", "animal"]]
        for i in range(count):
            _image(root / split / "img" / f"{i}.jpg", "RGB", (30, 20), value=i)
            rows.append([f"img/{i}.jpg", ["cat", "dog"][i % 2]])
        with open(root / split / "metadata.csv", "w", newline="") as file:
            csv.writer(file).writerows(rows)
    test = open_dataset(str(root), "test", input_spec=GREY_SPEC)
    assert test.files == ["test/img/0.jpg", "test/img/1.jpg"] and test.class_names == ("cat", "dog")
    assert [t.name for t in test.tasks] == ["cat", "dog"] and test.targets.tolist() == [[1, 0], [0, 1]]
    assert test.split_info["kind"] == "given+seeded" and test.split_info["counts"]["val"] == 1


# ----------------------------------------------------------------------------- 🤗 datasets, offline

def test_hf_datasets_reads_a_local_image_folder(fm_png, tmp_path):
    pytest.importorskip("datasets")
    source = f"hf:{fm_png}"
    folder = open_dataset(str(fm_png), "test", input_spec=FASHION_MNIST_INPUT_SPEC)
    hf = open_dataset(source, "test", input_spec=FASHION_MNIST_INPUT_SPEC, root=tmp_path / "cache")
    assert hf.class_names == folder.class_names and [t.name for t in hf.tasks] == [t.name for t in folder.tasks]
    assert hf.split_info["layout"] == "hf" and len(hf) == 100
    assert torch.equal(hf.targets.sum(dim=0), folder.targets.sum(dim=0))  # the same labels, in 🤗's row order
    images, targets = hf.get_batch([0, 5])
    assert images.shape == (2, 1, 28, 28) and targets.shape == (2, 10)
    val = open_dataset(source, "val", input_spec=FASHION_MNIST_INPUT_SPEC, root=tmp_path / "cache")
    assert val.split_info["kind"] == "given+seeded" and len(val) > 0  # 🤗 has train + test: val carved
    kway = open_dataset(source, "train", task_mode="kway", input_spec=FASHION_MNIST_INPUT_SPEC, root=tmp_path / "cache")
    assert [t.name for t in kway.tasks] == ["label"]
    stream = open_dataset(source, "test", streaming=True, input_spec=FASHION_MNIST_INPUT_SPEC, limit=7)
    items = list(stream)
    assert len(items) == 7 and items[0][0].shape == (1, 28, 28) and [t.name for t in stream.tasks] == [
        t.name for t in folder.tasks]
    with pytest.raises(UnknownNameError, match="no image column 'picture'"):
        open_dataset(source, "test", image_column="picture", root=tmp_path / "cache")
    with pytest.raises(DataNotFoundError, match="cannot load"):
        open_dataset(f"hf:{tmp_path / 'nothing-here'}", "train")


# ----------------------------------------------------------------------------- bad input

def test_empty_folder_and_single_class_are_refused(tmp_path):
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(DataNotFoundError, match="holds no images in class folders"):
        open_dataset(str(tmp_path / "empty"), "train")
    _tree(tmp_path / "one", {"cat": 3})
    with pytest.raises(InvalidDataError, match="only 'cat'; a task needs at least 2 classes"):
        open_dataset(str(tmp_path / "one"), "train")
    with pytest.raises(DataNotFoundError, match="not a folder"):
        open_dataset(str(tmp_path / "missing"), "train")


def test_corrupt_and_truncated_images_are_refused_or_skipped(tmp_path):
    root = _tree(tmp_path / "bad", {"a": 4, "b": 4})
    (root / "a" / "garbage.png").write_bytes(b"this is not a png")
    _image(root / "b" / "photo.jpg", "RGB", (300, 300))
    _image(root / "a" / "big.png", "L", (300, 300))
    for name in ("b/photo.jpg", "a/big.png"):
        data = (root / name).read_bytes()
        (root / name).write_bytes(data[: len(data) * 2 // 3])  # the header is whole, the end is not
    with pytest.raises(InvalidDataError) as refused:
        open_dataset(str(root), "train", input_spec=GREY_SPEC, val_fraction=0, test_fraction=0)
    message = str(refused.value)
    assert "3 of 11 images" in message and "a/garbage.png: not a readable image" in message
    assert "b/photo.jpg: the JPEG file is truncated" in message and "a/big.png: the PNG file is truncated" in message
    assert "skip_bad_images=True" in message
    skipped = open_dataset(str(root), "train", input_spec=GREY_SPEC, val_fraction=0, test_fraction=0,
                           skip_bad_images=True)
    assert len(skipped) == 8 and skipped.split_info["skipped"] == 3


def test_an_image_that_breaks_after_the_scan_is_replaced_not_fatal(tmp_path):
    root = _tree(tmp_path / "late", {"a": 3, "b": 3})
    dataset = open_dataset(str(root), "train", input_spec=GREY_SPEC, val_fraction=0, test_fraction=0)
    (root / dataset.files[1]).write_bytes(b"broken later")
    with pytest.warns(RuntimeWarning, match="cannot decode"):
        images, targets = dataset.get_batch([0, 1, 2])
    assert images.shape == (3, 1, 28, 28) and torch.equal(targets[1], dataset.targets[2])  # the next item


def test_metadata_problems_name_the_line_and_the_fix(tmp_path):
    root = tmp_path / "meta"
    for i in range(4):
        _image(root / f"{i}.png")

    def write(rows):
        with open(root / "metadata.csv", "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerows([["file_name", "colour", "size"], *rows])

    write([["0.png", "red", "s"], ["1.png", "blue", "l"], ["gone.png", "red", "s"], ["3.png", "blue", "s"]])
    with pytest.raises(DataNotFoundError, match=r"missing image files in 1 row\(s\): metadata.csv, line 4: 'gone"):
        open_dataset(str(root), "train")
    write([["0.png", "red", "s"], ["1.png", "", "l"], ["2.png", "red", "s"], ["3.png", "blue", "s"]])
    with pytest.raises(InvalidDataError, match=r"empty labels in 1 row\(s\): metadata.csv, line 3: 'colour'"):
        open_dataset(str(root), "train")
    for name in ("../outside.png", "/etc/hostname", "a/../../x.png"):
        write([["0.png", "red", "s"], [name, "blue", "l"]])
        with pytest.raises(UnsafePathError, match="leaves the data folder"):
            open_dataset(str(root), "train")
    (tmp_path / "secret.png").write_bytes((root / "0.png").read_bytes())
    os.symlink(tmp_path / "secret.png", root / "link.png")
    write([["0.png", "red", "s"], ["link.png", "blue", "l"]])
    with pytest.raises(UnsafePathError, match="link that leads outside"):
        open_dataset(str(root), "train")


def test_a_link_leaving_the_image_folder_is_refused(tmp_path):
    root = _tree(tmp_path / "linked", {"a": 2, "b": 2})
    outside = _tree(tmp_path / "elsewhere", {"c": 2})
    os.symlink(outside / "c" / "000.png", root / "a" / "sneaky.png")
    with pytest.raises(UnsafePathError, match=r"sneaky\.png is a link that leads outside"):
        open_dataset(str(root), "train")
    (root / "a" / "sneaky.png").unlink()
    os.symlink(outside / "c", root / "c")
    with pytest.raises(UnsafePathError, match="leads outside the data folder"):
        open_dataset(str(root), "train")
    (root / "c").unlink()
    os.symlink(root / "b", root / "b-again")  # a link that stays inside is fine
    assert open_dataset(str(root), "train", input_spec=GREY_SPEC, val_fraction=0, test_fraction=0).class_names == (
        "a", "b", "b-again")


# ----------------------------------------------------------------------------- workers

def test_dataset_pickles_and_decodes_in_dataloader_workers(fm_png):
    dataset = open_dataset(str(fm_png), "test", input_spec=FASHION_MNIST_INPUT_SPEC)
    copy = pickle.loads(pickle.dumps(dataset))
    assert torch.equal(copy.get_batch([3, 4])[0], dataset.get_batch([3, 4])[0])
    loader = torch.utils.data.DataLoader(dataset, batch_size=16, num_workers=2, shuffle=False)
    images, targets = (torch.cat(parts) for parts in zip(*loader))
    assert images.shape == (100, 1, 28, 28) and torch.equal(targets, dataset.targets)
    assert torch.equal(images[:8], dataset.get_batch(range(8))[0])


def test_built_in_names_are_load_dataset(tmp_path):
    ours, theirs = open_dataset("dsprites", "test", limit=5, seed=2), load_dataset("dsprites", "test", limit=5, seed=2)
    assert torch.equal(ours.grid_indices, theirs.grid_indices)
    with pytest.raises(UnknownNameError, match="unknown split 'holdout'"):
        open_dataset(str(tmp_path), "holdout")


# ----------------------------------------------------------------------------- unlabelled folders

RGB_SPEC = InputSpec(channels=3, size=16, mean=(0.5,) * 3, std=(0.5,) * 3)


def _unlabelled(tmp_path: Path, **options):
    from kf_model.training import DataSourceConfig, open_data_source

    return open_data_source(DataSourceConfig(data_dir=str(tmp_path), unlabelled=True, **options), "train", RGB_SPEC)


def test_skip_bad_images_applies_to_a_folder_of_loose_images(tmp_path, capsys):
    for i in range(3):
        _image(tmp_path / f"p{i}.png", "RGB")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(InvalidDataError, match=r"(?s)1 of 4 images cannot be used:\n  - broken\.jpg.*--skip-bad"):
        _unlabelled(tmp_path)
    dataset, info = _unlabelled(tmp_path, skip_bad_images=True)
    assert len(dataset) == 3 and info.skipped == {"count": 1, "files": ["broken.jpg"]}
    assert "skipped 1 bad image of the train split (--skip-bad-images): broken.jpg" in capsys.readouterr().out


def test_unlabelled_on_a_class_folder_tree_names_the_sub_folders(tmp_path):
    _tree(tmp_path, {"cat": 2, "dog": 2}, split="train")
    with pytest.raises(DataNotFoundError, match=r"no images of its own, only the sub-folders 'train'.*leave out "
                                                r"--unlabelled"):
        _unlabelled(tmp_path)
    with pytest.raises(DataNotFoundError, match=r"only the sub-folders 'cat', 'dog'"):
        _unlabelled(tmp_path / "train")


def test_val_size_on_unlabelled_images_is_refused_before_training(tmp_path):
    from kf_model.training import DataConfig, DataSourceConfig, load_training_data

    for i in range(4):
        _image(tmp_path / f"p{i}.png", "RGB")
    data = DataConfig(DataSourceConfig(data_dir=str(tmp_path)), val_size=2)
    with pytest.raises(KFError, match=r"--val-size 2: .* has no labels to measure accuracy on"):
        load_training_data(data, RGB_SPEC)


def test_metadata_with_only_file_names_asks_for_a_label_column(tmp_path):
    for i in range(3):
        _image(tmp_path / f"{i}.png")
    (tmp_path / "metadata.csv").write_text("file_name\n0.png\n1.png\n2.png\n")
    with pytest.raises(InvalidDataError, match=r"metadata\.csv has no label column, only 'file_name': add one .*"
                                               r"--unlabelled"):
        open_dataset(str(tmp_path), "train")
