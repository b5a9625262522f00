"""The dSprites replica: factor grid, rendering geometry, split, batched fetch, subsets, errors."""

import math

import pytest
import torch
from torch.utils.data import DataLoader

from kf_model.data import (
    DATASET_NAMES,
    FACTOR_SIZES,
    DSprites,
    factor_values,
    factors_to_index,
    index_to_factors,
    load_dataset,
    render,
)
from kf_model.data.dsprites import NUM_IMAGES, NUM_TEST, render_indices, split_indices
from kf_model.errors import UnknownNameError


def render_classes(classes) -> torch.Tensor:
    """Images `[B, 64, 64]` of factor classes, through the dataset's (template) path."""
    return render_indices(factors_to_index(classes))[:, 0]


def centroid(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centroid (x = column, y = row) of each binary image `[B, H, W]`."""
    rows = torch.arange(images.shape[1], dtype=torch.float64).view(1, -1, 1)
    cols = torch.arange(images.shape[2], dtype=torch.float64).view(1, 1, -1)
    area = images.double().sum(dim=(1, 2))
    return (images * cols).sum(dim=(1, 2)) / area, (images * rows).sum(dim=(1, 2)) / area


# ----------------------------------------------------------------------------- factor grid

def test_grid_order_is_the_original_one_last_factor_fastest():
    grid = torch.cartesian_prod(*(torch.arange(n) for n in FACTOR_SIZES))
    assert NUM_IMAGES == 737_280 == len(grid)
    assert torch.equal(factors_to_index(grid), torch.arange(NUM_IMAGES))


def test_index_factor_bijection_on_random_indices_and_corners():
    index = torch.randint(0, NUM_IMAGES, (2000,), generator=torch.Generator().manual_seed(1))
    assert torch.equal(factors_to_index(index_to_factors(index)), index)
    corners = {0: [0, 0, 0, 0, 0], 1: [0, 0, 0, 0, 1], 32: [0, 0, 0, 1, 0], 245_759: [0, 5, 39, 31, 31],
               245_760: [1, 0, 0, 0, 0], 491_520: [2, 0, 0, 0, 0], NUM_IMAGES - 1: [2, 5, 39, 31, 31]}
    for index, classes in corners.items():
        assert index_to_factors(index).tolist() == classes
        assert factors_to_index(classes).item() == index
    with pytest.raises(ValueError):
        index_to_factors(NUM_IMAGES)
    with pytest.raises(ValueError):
        factors_to_index([3, 0, 0, 0, 0])


def test_factor_values_match_the_documented_grid():
    values = factor_values([[2, 5, 10, 31, 0]])[0].tolist()
    assert values == pytest.approx([2.0, 1.0, math.pi / 2, 1.0, 0.0])
    assert factor_values([[0, 0, 39, 0, 31]])[0, 2].item() == pytest.approx(2 * math.pi * 39 / 40)  # no 2*pi


# ----------------------------------------------------------------------------- rendering geometry

def test_templates_give_the_same_pixels_as_the_direct_point_in_shape_test():
    index = torch.randint(0, NUM_IMAGES, (300,), generator=torch.Generator().manual_seed(2))
    direct = render(*factor_values(index_to_factors(index)).unbind(1))
    assert torch.equal(render_indices(index)[:, 0], direct)


def test_square_size_and_area_grow_with_scale_for_every_shape_and_orientation():
    # axis-aligned square at scale s: half side 10*s px on pixel centres -> (20*s + 1)^2 pixels, ~20 px at s=1
    squares = render_classes([[0, s, 0, 16, 16] for s in range(6)]).sum(dim=(1, 2))
    assert squares.tolist() == [121, 169, 225, 289, 361, 441]
    # bounding boxes (width, height) at scale 1, orientation 0: the ellipse is 2:1, the heart about as big
    for shape, box in enumerate([(21, 21), (21, 11), (21, 20)]):
        image = render_classes([[shape, 5, 0, 16, 16]])[0]
        assert (image.any(dim=0).sum().item(), image.any(dim=1).sum().item()) == box
    for shape in range(3):
        classes = [[shape, s, o, 16, 16] for o in range(40) for s in range(6)]
        areas = render_classes(classes).sum(dim=(1, 2)).view(40, 6)
        assert (areas.diff(dim=1) > 0).all(), f"area not increasing with scale for shape {shape}"


def test_centroid_follows_position_one_pixel_per_step():
    for shape, scale, orientation in [(0, 2, 3), (1, 5, 17), (2, 0, 0), (2, 4, 29)]:
        for axis in (3, 4):  # pos_x moves columns, pos_y moves rows
            classes = torch.tensor([[shape, scale, orientation, 7, 7]]).repeat(32, 1)
            classes[:, axis] = torch.arange(32)
            x, y = centroid(render_classes(classes))
            moving, fixed = (x, y) if axis == 3 else (y, x)
            assert torch.allclose(moving.diff(), torch.ones(31, dtype=torch.float64))
            assert torch.allclose(fixed, fixed[0].expand(32))


def test_every_sprite_stays_inside_the_frame():
    classes = [[shape, 5, o, px, py] for shape in range(3) for o in range(40) for px in (0, 31) for py in (0, 31)]
    images = render_classes(classes)
    border = images[:, [0, -1], :].sum() + images[:, :, [0, -1]].sum()
    assert border == 0
    assert (images.sum(dim=(1, 2)) > 0).all()


def test_orientation_is_counter_clockwise_and_symmetries_repeat():
    # on a 33x33 canvas centred on the sprite, 90 degrees must be exactly numpy/torch's rot90 (counter-clockwise)
    heart, heart_90 = render(2, 1.0, torch.tensor([0.0, math.pi / 2]), 0.0, 0.0, size=33)
    assert torch.equal(torch.rot90(heart, 1, dims=(0, 1)), heart_90)
    assert heart[:16].sum() > heart[17:].sum()  # lobes on top: the heart points down at orientation 0
    for scale in range(6):
        square = render_classes([[0, scale, o, 16, 16] for o in range(40)])
        ellipse = render_classes([[1, scale, o, 16, 16] for o in range(40)])
        hearts = render_classes([[2, scale, o, 16, 16] for o in range(40)])
        # tolerance: pixel-identical (boundary points count as inside with a 1e-9 margin, so cos(pi/2) != 0 is harmless)
        assert torch.equal(square[:30], square[10:]), "the square must repeat every 10 steps (90 degrees)"
        assert torch.equal(ellipse[:20], ellipse[20:]), "the ellipse must repeat every 20 steps (180 degrees)"
        assert not torch.equal(square[0], square[5])
        changed = (hearts[:30] != hearts[10:]).sum(dim=(1, 2)).double()
        assert (changed > 0.2 * hearts[:30].sum(dim=(1, 2))).all(), "rotating the heart by 90 degrees must show"


# ----------------------------------------------------------------------------- dataset

def test_split_sizes_add_up_without_overlap_and_are_pinned():
    train, test = split_indices("train"), split_indices("test")
    assert len(test) == NUM_TEST == 73_728 and len(train) + len(test) == NUM_IMAGES
    assert len(torch.cat([train, test]).unique()) == NUM_IMAGES
    assert (train.diff() > 0).all() and (test.diff() > 0).all()
    # the split is a fixed hash of the index: changing it would silently move images between train and test
    assert test[:5].tolist() == [2, 4, 9, 21, 24] and test.sum().item() == 27_216_051_294
    assert len(load_dataset("dsprites", "train")) == len(train)


def test_items_dtype_range_shape_and_targets():
    dataset = load_dataset("dsprites", "test")
    assert [t.name for t in dataset.tasks] == ["shape", "scale", "orientation", "pos_x", "pos_y"]
    assert [t.num_classes for t in dataset.tasks] == list(FACTOR_SIZES)
    assert dataset.tasks[2].labels[1] == "9°" and dataset.tasks[1].labels[0] == "0.50"
    assert dataset.input_spec.channels == 1 and dataset.input_spec.size == 64
    image, targets = dataset[5]
    assert image.dtype == torch.float32 and image.shape == (1, 64, 64)
    assert set(image.unique().tolist()) == {0.0, 1.0}
    assert targets.dtype == torch.int64 and targets.shape == (5,)
    assert torch.equal(targets, dataset.factor_classes([5])[0])
    assert torch.equal(dataset.factor_classes([5])[0], index_to_factors(dataset.grid_indices[5]))


def test_getitems_matches_getitem_and_feeds_a_dataloader():
    dataset = load_dataset("dsprites", "train", limit=64, seed=1)
    items = [3, 0, 63, 3, 17]
    batched = dataset.__getitems__(items)
    for item, (image, targets) in zip(items, batched):
        single_image, single_targets = dataset[item]
        assert torch.equal(image, single_image) and torch.equal(targets, single_targets)
    images, targets = next(iter(DataLoader(dataset, batch_size=16, shuffle=False)))
    assert images.shape == (16, 1, 64, 64) and targets.shape == (16, 5)
    assert torch.equal(images[3], dataset[3][0])


def test_limit_is_a_seeded_subset_of_the_split():
    first = load_dataset("dsprites", "train", limit=100, seed=7)
    again = load_dataset("dsprites", "train", limit=100, seed=7)
    other = load_dataset("dsprites", "train", limit=100, seed=8)
    assert len(first) == 100
    assert torch.equal(first.grid_indices, again.grid_indices)
    assert not torch.equal(first.grid_indices, other.grid_indices)
    assert torch.isin(first.grid_indices, split_indices("train")).all()
    assert torch.equal(first.targets, index_to_factors(first.grid_indices))
    assert len(load_dataset("dsprites", "test", limit=None)) == NUM_TEST
    with pytest.raises(ValueError):
        load_dataset("dsprites", "test", limit=0)


def test_unknown_names_are_refused_with_the_known_ones():
    with pytest.raises(UnknownNameError, match=r"dsprites, fashion-mnist"):
        load_dataset("dsprite", "train")
    with pytest.raises(UnknownNameError, match="train, test"):
        load_dataset("dsprites", "validation")
    with pytest.raises(UnknownNameError):
        DSprites("val")
    assert DATASET_NAMES == ("dsprites", "fashion-mnist")
