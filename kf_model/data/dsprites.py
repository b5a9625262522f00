"""A procedural replica of dSprites (Matthey et al., 2017): 737,280 binary 64x64 sprites, rendered on demand.

The grid is the original's: shape (3) x scale (6) x orientation (40) x pos_x (32) x pos_y (32), in that
order, last factor fastest. One difference: orientations are 2*pi*k/40 for k < 40; the original listed
both 0 and 2*pi (the same image twice).

An image is a point-in-shape test at pixel centres after the inverse transform (translate, rotate, scale).
Positions step by exactly one pixel and start on a pixel centre, so every image is an integer translation
of one of 720 (shape, scale, orientation) templates: a batch is rendered by pasting cached templates,
pixel-identical to the direct test (tests check it) and fast enough to never starve a training loop.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch

from kf_model.data.batched import BatchedDataset
from kf_model.data.specs import InputSpec, TaskSpec
from kf_model.errors import InvalidArgumentError, UnknownNameError

FACTOR_NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y")
FACTOR_SIZES = (3, 6, 40, 32, 32)
NUM_IMAGES = math.prod(FACTOR_SIZES)  # 737,280
SHAPES = ("square", "ellipse", "heart")
SCALES = tuple(np.linspace(0.5, 1.0, 6).tolist())
ORIENTATIONS = tuple((2 * math.pi * k / 40) for k in range(40))  # radians, counter-clockwise on screen
POSITIONS = tuple(np.linspace(0.0, 1.0, 32).tolist())  # pos_x: left to right; pos_y: top to bottom

IMAGE_SIZE = 64
SPRITE_HALF_SIZE = 10.0  # pixels at scale 1: the square spans ~20 px, like the original's sprites
POS_ORIGIN = 16.5  # pixel coordinate of the centre at position 0 (pixel i covers [i, i+1], centre i+0.5)
POS_SPAN = 31.0  # pixels from position 0 to 1: exactly one pixel per step; the rotated big square still fits
ELLIPSE_MINOR = 0.5  # semi-axes 1 and 0.5, the long axis along x at orientation 0
HEART_SCALE, HEART_SHIFT = 1.118, 0.118  # the classic heart spans y in [-1, 1.236]: map it onto v in [-1, 1]
_EPS = 1e-9  # points on a boundary count as inside, robustly to cos(pi/2) != 0 in floating point

SPLIT_SEED = 20220707  # fixed forever (the paper's arXiv date), independent of load_dataset's `seed`
NUM_TEST = NUM_IMAGES // 10  # 73,728 test images; the remaining 663,552 are for training

ArrayLike = torch.Tensor | np.ndarray | Sequence | float  # anything torch.as_tensor takes

_STRIDES = torch.tensor([math.prod(FACTOR_SIZES[i + 1:]) for i in range(len(FACTOR_SIZES))])
_TEMPLATE_SIZE = 32  # template canvas: centre at 16.5, holds the largest rotated sprite (half-diagonal 14.1 px)

DSPRITES_TASKS = [
    TaskSpec("shape", SHAPES, "Which shape is the sprite: square, ellipse or heart?"),
    TaskSpec("scale", tuple(f"{s:.2f}" for s in SCALES), "Size of the sprite: 6 steps from 0.5 to 1."),
    TaskSpec("orientation", tuple(f"{9 * k}°" for k in range(40)),
             "Rotation of the sprite, counter-clockwise: 40 steps of 9° in [0°, 360°)."),
    TaskSpec("pos_x", tuple(f"{p:.2f}" for p in POSITIONS),
             "Horizontal position of the sprite's centre: 32 steps from 0 (left) to 1 (right)."),
    TaskSpec("pos_y", tuple(f"{p:.2f}" for p in POSITIONS),
             "Vertical position of the sprite's centre: 32 steps from 0 (top) to 1 (bottom)."),
]

# Mean pixel value of the training split, computed exactly by `python -m kf_model.data stats dsprites`
# over all pixels of the 663,552 training images; std = sqrt(m * (1 - m)), as the pixels are 0 or 1.
DSPRITES_INPUT_SPEC = InputSpec(channels=1, size=IMAGE_SIZE, mean=(0.041228,), std=(0.198816,))


# ----------------------------------------------------------------------------- factor grid

def factors_to_index(classes: ArrayLike) -> torch.Tensor:
    """Grid index of factor classes `[..., 5]` (shape, scale, orientation, pos_x, pos_y) -> int64 `[...]`."""
    classes = torch.as_tensor(np.asarray(classes), dtype=torch.int64)
    if classes.shape[-1:] != (len(FACTOR_SIZES),):
        raise InvalidArgumentError(
            f"factor classes need a last dimension of {len(FACTOR_SIZES)}, got {tuple(classes.shape)}")
    sizes = torch.tensor(FACTOR_SIZES)
    if ((classes < 0) | (classes >= sizes)).any():
        raise InvalidArgumentError(f"factor classes out of range: sizes are {FACTOR_SIZES}")
    return (classes * _STRIDES).sum(-1)


def index_to_factors(index: ArrayLike) -> torch.Tensor:
    """Factor classes int64 `[..., 5]` of grid indices `[...]`: the inverse of `factors_to_index`."""
    index = torch.as_tensor(np.asarray(index), dtype=torch.int64)
    if ((index < 0) | (index >= NUM_IMAGES)).any():
        raise InvalidArgumentError(f"grid index out of range [0, {NUM_IMAGES})")
    return (index.unsqueeze(-1) // _STRIDES) % torch.tensor(FACTOR_SIZES)


def factor_values(classes: ArrayLike) -> torch.Tensor:
    """Float64 values `[..., 5]` of factor classes: shape index, scale, orientation (radians), pos_x, pos_y."""
    classes = torch.as_tensor(np.asarray(classes), dtype=torch.int64)
    tables = [torch.arange(3, dtype=torch.float64), torch.tensor(SCALES, dtype=torch.float64),
              torch.tensor(ORIENTATIONS, dtype=torch.float64), torch.tensor(POSITIONS, dtype=torch.float64),
              torch.tensor(POSITIONS, dtype=torch.float64)]
    return torch.stack([table[classes[..., i]] for i, table in enumerate(tables)], dim=-1)


# ----------------------------------------------------------------------------- rendering

def _inside_square(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.maximum(u.abs(), v.abs()) <= 1 + _EPS


def _inside_ellipse(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return u**2 + (v / ELLIPSE_MINOR) ** 2 <= 1 + _EPS


def _inside_heart(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    x, y = u * HEART_SCALE, v * HEART_SCALE + HEART_SHIFT  # v points up, so the tip (y = -1) is at the bottom
    return (x**2 + y**2 - 1) ** 3 - x**2 * y**3 <= _EPS


_SHAPE_TESTS = (_inside_square, _inside_ellipse, _inside_heart)


def render(shape: ArrayLike, scale: ArrayLike, orientation: ArrayLike, pos_x: ArrayLike, pos_y: ArrayLike, *,
           size: int = IMAGE_SIZE) -> torch.Tensor:
    """Render sprites from factor *values* (broadcastable, any real values) -> float32 `[B, size, size]` of 0/1.

    This is the definition of the dataset's images; `DSprites` gets the same pixels faster from templates.
    """
    shape, scale, orientation, pos_x, pos_y = (t.reshape(-1) for t in torch.broadcast_tensors(
        torch.as_tensor(shape, dtype=torch.int64), *(torch.as_tensor(a, dtype=torch.float64)
                                                    for a in (scale, orientation, pos_x, pos_y))))
    centres = torch.arange(size, dtype=torch.float64) + 0.5
    dx = centres.view(1, 1, size) - (POS_ORIGIN + POS_SPAN * pos_x).view(-1, 1, 1)  # right
    dy = (POS_ORIGIN + POS_SPAN * pos_y).view(-1, 1, 1) - centres.view(1, size, 1)  # up (rows go down)
    cos, sin = orientation.cos().view(-1, 1, 1), orientation.sin().view(-1, 1, 1)
    radius = (SPRITE_HALF_SIZE * scale).view(-1, 1, 1)
    u = (cos * dx + sin * dy) / radius  # rotate back by -orientation, then undo the scale
    v = (cos * dy - sin * dx) / radius
    inside = torch.zeros(len(shape), size, size, dtype=torch.bool)
    for k, test in enumerate(_SHAPE_TESTS):
        rows = (shape == k).nonzero().squeeze(1)
        if len(rows):
            inside[rows] = test(u[rows], v[rows])
    return inside.float()


@functools.cache
def _templates() -> np.ndarray:
    """The 720 (shape, scale, orientation) sprites at position (0, 0) on a 32x32 canvas, float32 `[720, 32*32]`."""
    classes = torch.cartesian_prod(torch.arange(3), torch.arange(6), torch.arange(40))
    values = factor_values(torch.cat([classes, torch.zeros(len(classes), 2, dtype=torch.int64)], dim=1))
    templates = render(*values.unbind(1), size=_TEMPLATE_SIZE)
    border = templates[:, [0, -1], :].sum() + templates[:, :, [0, -1]].sum()
    assert border == 0, "a sprite touches the template border: the template canvas is too small"
    return templates.reshape(len(templates), -1).numpy()


def render_indices(index: ArrayLike) -> torch.Tensor:
    """Render grid indices `[B]` -> float32 `[B, 1, 64, 64]` by pasting templates at integer offsets.

    Done in numpy on purpose: it is single-threaded, so it does not fight DataLoader workers or a busy
    machine for torch's intra-op thread pool (which made the torch version several times slower).
    """
    factors = index_to_factors(index).reshape(-1, len(FACTOR_SIZES)).numpy()
    n, t, size = len(factors), _TEMPLATE_SIZE, IMAGE_SIZE
    template_ids = (factors[:, 0] * FACTOR_SIZES[1] + factors[:, 1]) * FACTOR_SIZES[2] + factors[:, 2]
    offsets = np.arange(t)
    rows = factors[:, 4, None, None] + offsets[None, :, None]  # template row j -> image row j + pos_y class
    cols = factors[:, 3, None, None] + offsets[None, None, :]
    flat = (np.arange(n)[:, None, None] * size + rows) * size + cols
    images = np.zeros(n * size * size, dtype=np.float32)
    images[flat.ravel()] = _templates()[template_ids].ravel()
    return torch.from_numpy(images.reshape(n, 1, size, size))


# ----------------------------------------------------------------------------- split and dataset

def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A fixed 64-bit hash: the split depends on this code only, not on any library's RNG stream."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


@functools.cache
def split_indices(split: str) -> torch.Tensor:
    """Sorted grid indices of a split: 10% of a seeded permutation of the grid for "test", the rest for "train"."""
    if split not in ("train", "test"):
        raise UnknownNameError(f"unknown split {split!r} for dataset 'dsprites'; known splits: train, test")
    order = np.argsort(_splitmix64(np.arange(NUM_IMAGES, dtype=np.uint64) ^ np.uint64(SPLIT_SEED)), kind="stable")
    chosen = order[:NUM_TEST] if split == "test" else order[NUM_TEST:]
    return torch.from_numpy(np.sort(chosen)).to(torch.int64)


class DSprites(BatchedDataset):
    """dSprites items `(image [1, 64, 64] float32 0/1, targets int64 [5])`, rendered on demand."""

    tasks: list[TaskSpec] = DSPRITES_TASKS
    input_spec: InputSpec = DSPRITES_INPUT_SPEC
    one_vs_rest = False
    name = "dsprites"

    def __init__(self, split: str = "train", grid_indices: torch.Tensor | None = None) -> None:
        self.split = split
        self.grid_indices = split_indices(split) if grid_indices is None else torch.as_tensor(grid_indices)

    def __len__(self) -> int:
        return len(self.grid_indices)

    def get_batch(self, items: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
        """Stacked `(images [B, 1, 64, 64], targets [B, 5])` of dataset positions `items`."""
        index = self.grid_indices[torch.as_tensor(items, dtype=torch.int64)]
        return render_indices(index), index_to_factors(index)

    def factor_classes(self, items: ArrayLike | None = None) -> torch.Tensor:
        """Factor classes int64 `[n, 5]` of dataset positions (all by default), without rendering."""
        index = self.grid_indices if items is None else self.grid_indices[torch.as_tensor(items, dtype=torch.int64)]
        return index_to_factors(index).reshape(-1, len(FACTOR_SIZES))

    def factor_values(self, items: ArrayLike | None = None) -> torch.Tensor:
        """Factor values float64 `[n, 5]` (shape index, scale, radians, pos_x, pos_y), without rendering."""
        return factor_values(self.factor_classes(items))

    @property
    def targets(self) -> torch.Tensor:
        """All targets int64 `[len, 5]` (the factor classes), without rendering."""
        return self.factor_classes()

    def select(self, items: ArrayLike) -> DSprites:
        """The sub-dataset at positions `items` (used by `load_dataset(limit=...)`)."""
        return DSprites(self.split, self.grid_indices[torch.as_tensor(items, dtype=torch.int64)])
