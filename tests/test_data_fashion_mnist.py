"""The real Fashion-MNIST from Debian's dataset-fashion-mnist: sizes, balance, targets, and the missing-data error."""

import gzip
import shutil

import pytest
import torch

from kf_model.data import FASHION_MNIST_CLASSES, load_dataset
from kf_model.data.fashion_mnist import DEBIAN_DIR, ENV_DIR, FILES, FashionMNIST
from kf_model.errors import DataNotFoundError, KFError, UnknownNameError

SLUGS = ["t_shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"]


@pytest.fixture(scope="module")
def splits() -> dict[str, FashionMNIST]:
    """Both splits, or a failure that says how to install them (a missing dataset must not pass as a skip)."""
    try:
        return {split: load_dataset("fashion-mnist", split) for split in ("train", "test")}
    except DataNotFoundError as error:
        message = str(error)
    pytest.fail(f"Fashion-MNIST is not installed (run `sudo apt-get install dataset-fashion-mnist`):\n{message}",
                pytrace=False)


def test_sizes_and_balanced_classes(splits):
    for split, size, per_class in (("train", 60_000, 6_000), ("test", 10_000, 1_000)):
        dataset = splits[split]
        assert len(dataset) == size
        assert dataset.class_indices.bincount(minlength=10).tolist() == [per_class] * 10
    # known first labels of the official files: the idx decoding keeps the order
    assert splits["train"].class_indices[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert splits["test"].class_indices[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]


def test_images_are_float_in_unit_range(splits):
    dataset = splits["test"]
    image, _ = dataset[0]
    assert image.dtype == torch.float32 and image.shape == (1, 28, 28)
    images, _ = dataset.get_batch(range(0, 10_000, 7))
    assert images.min() == 0.0 and images.max() == 1.0
    assert dataset.input_spec.size == 28 and dataset.input_spec.channels == 1
    train_images = splits["train"].images
    mean = train_images.sum(dtype=torch.int64).item() / train_images.numel() / 255
    assert mean == pytest.approx(dataset.input_spec.mean[0], abs=1e-5)  # the hard-coded constant is the real one


def test_one_vs_rest_targets_agree_with_the_class(splits):
    dataset = splits["test"]
    targets = dataset.targets
    assert targets.dtype == torch.int64 and targets.shape == (10_000, 10)
    assert (targets.sum(dim=1) == 1).all()
    assert torch.equal(targets.argmax(dim=1), dataset.class_indices)
    for item in (0, 1, 9_999):
        _, item_targets = dataset[item]
        assert torch.equal(item_targets, targets[item])
    batched = dataset.__getitems__([4, 2])
    assert torch.equal(batched[0][0], dataset[4][0]) and torch.equal(batched[1][1], targets[2])


def test_tasks_are_the_ten_classes_one_vs_rest(splits):
    tasks = splits["train"].tasks
    assert [t.name for t in tasks] == SLUGS
    assert all(t.num_classes == 2 for t in tasks)
    assert tasks[0].labels == ("not T-shirt/top", "T-shirt/top")
    assert tasks[9].labels == ("not Ankle boot", "Ankle boot") and "ankle boot" in tasks[9].description
    assert list(FASHION_MNIST_CLASSES) == [t.labels[1] for t in tasks]
    assert splits["train"].one_vs_rest


def test_limit_is_a_seeded_subset(splits):
    first = load_dataset("fashion-mnist", "train", limit=500, seed=3)
    again = load_dataset("fashion-mnist", "train", limit=500, seed=3)
    other = load_dataset("fashion-mnist", "train", limit=500, seed=4)
    assert len(first) == 500
    assert torch.equal(first.images, again.images) and torch.equal(first.class_indices, again.class_indices)
    assert not torch.equal(first.images, other.images)
    assert len(first.class_indices.unique()) == 10


def test_missing_data_error_names_the_places_the_files_and_the_fixes(tmp_path, monkeypatch):
    root, debian = tmp_path / "empty_root", tmp_path / "no_debian_package"
    root.mkdir()
    debian.mkdir()
    monkeypatch.setenv(ENV_DIR, str(debian))
    with pytest.raises(DataNotFoundError) as caught:
        load_dataset("fashion-mnist", "test", root=root)
    message = str(caught.value)
    for expected in (f"- {root}\n", f"- {root / 'FashionMNIST' / 'raw'}\n", f"- {debian} ", *FILES["test"],
                     "apt-get install dataset-fashion-mnist", "--data-dir", "download=True"):
        assert expected in message
    assert str(DEBIAN_DIR) not in message  # the env var replaces the Debian directory


def test_root_is_looked_at_first_directly_or_in_torchvision_layout(splits, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_DIR, str(tmp_path / "nothing_here"))
    for folder in (tmp_path / "flat", tmp_path / "torchvision" / "FashionMNIST" / "raw"):
        folder.mkdir(parents=True)
        for name in FILES["test"]:
            (folder / f"{name}.gz").symlink_to(DEBIAN_DIR / f"{name}.gz")
    assert len(FashionMNIST("test", root=tmp_path / "flat")) == 10_000
    assert len(FashionMNIST("test", root=tmp_path / "torchvision")) == 10_000


def test_corrupt_file_is_reported_with_its_name(splits, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_DIR, str(tmp_path / "nothing_here"))
    images, labels = FILES["test"]
    with gzip.open(tmp_path / f"{images}.gz", "wb") as f:
        f.write(b"not an idx file at all")
    shutil.copy(DEBIAN_DIR / f"{labels}.gz", tmp_path / f"{labels}.gz")
    with pytest.raises(KFError, match=images):
        FashionMNIST("test", root=tmp_path)


def test_unknown_split_is_refused():
    with pytest.raises(UnknownNameError, match="train, test"):
        load_dataset("fashion-mnist", "val")
