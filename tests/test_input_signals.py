"""The pre-network photo signals on known values, their limits, and the checks on hostile statistics files."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from kf_model.errors import CorruptWeightsError
from kf_model.serving.familiarity_files import check_config, check_signal_config, check_tensors
from kf_model.serving.input_signals import (
    OBJECT_SIGNALS,
    SIGNALS,
    SignalLimits,
    blank_page,
    border_mask,
    chroma,
    detail_share,
    fit_limit,
    fit_limits,
    fit_photo_limits,
    image_signals,
    neighbour_correlation,
    signals_of_array,
    tensor_signals,
)

METHOD = "mahalanobis-ckn-pooled"


def square_on(background: float, square: float, side: int = 20) -> np.ndarray:
    """[side, side, 3] grey image: a centred 10x10 square of one level on a background of another."""
    image = np.full((side, side, 3), background, dtype=np.float32)
    image[5:15, 5:15] = square
    return image


def test_border_mask_and_chroma_on_known_values() -> None:
    ring = border_mask(20, 20)  # 10 % of 20 px: a 2-px ring
    assert ring.sum() == 20 * 20 - 16 * 16 and not ring[2:18, 2:18].any()
    assert border_mask(5, 5).sum() == 25 - 9  # at least one pixel thick
    np.testing.assert_allclose(chroma(np.array([[1.0, 0.0, 0.5], [0.3, 0.3, 0.3]])), [1.0, 0.0])


def test_a_light_object_on_black_is_what_the_banks_see() -> None:
    signals = signals_of_array(square_on(0.0, 1.0), inverted=False)
    assert set(signals) == set(SIGNALS)
    assert {name: signals[name] for name in OBJECT_SIGNALS} == {
        "border_colour": 0.0, "colour": 0.0, "border_level": 0.0, "border_spread": 0.0,
        "object_fill": pytest.approx(100 / 400)}


def test_a_dark_object_on_white_gives_the_same_signals_once_inverted() -> None:
    dark_on_white = signals_of_array(square_on(1.0, 0.0), inverted=True)
    light_on_black = signals_of_array(square_on(0.0, 1.0), inverted=False)
    assert {n: dark_on_white[n] for n in OBJECT_SIGNALS} == {n: light_on_black[n] for n in OBJECT_SIGNALS}


def test_a_red_picture_has_full_colour_and_a_bright_edge() -> None:
    red = np.zeros((10, 10, 3), dtype=np.float32)
    red[..., 0] = 1.0
    signals = signals_of_array(red, inverted=False)
    assert signals["border_colour"] == 1.0 and signals["colour"] == 1.0
    assert signals["border_level"] == pytest.approx(0.299) and signals["border_spread"] == pytest.approx(0.0, abs=1e-6)
    assert signals["object_fill"] == 0.0


def test_a_half_bright_edge_has_spread_one_half() -> None:
    image = np.zeros((10, 10, 3), dtype=np.float32)
    image[:5] = 1.0  # the ring: 18 bright pixels of 36 (top half) -> mean 0.5, std 0.5
    signals = signals_of_array(image, inverted=False)
    assert signals["border_level"] == pytest.approx(0.5) and signals["border_spread"] == pytest.approx(0.5)


def test_image_and_tensor_signals_agree_on_a_grey_dataset_image() -> None:
    array = (square_on(0.0, 0.8, side=28)[..., 0] * 255).round().astype(np.uint8)
    from_pil = image_signals(Image.fromarray(array, mode="L"), inverted=False)
    from_tensor = tensor_signals(torch.from_numpy(array).float()[None, None] / 255.0)[0]
    assert from_pil == pytest.approx(from_tensor)


def test_a_large_upload_is_read_at_a_small_size() -> None:
    big = Image.new("RGB", (4000, 3000), (0, 200, 0))
    assert image_signals(big, inverted=False)["border_colour"] == pytest.approx(200 / 255)


def test_wrong_shapes_are_refused() -> None:
    with pytest.raises(ValueError):
        signals_of_array(np.zeros((4, 4)), inverted=False)
    with pytest.raises(ValueError):
        tensor_signals(torch.zeros(2, 2, 8, 8))


def test_fit_limit_is_halfway_from_the_bank_quantile_to_the_median_photo() -> None:
    bank = [0.0] * 99 + [0.1]
    photos = [0.2, 0.5, 0.9]
    assert fit_limit(bank, photos, bank_quantile=1.0, towards_photos=0.5) == pytest.approx(0.3)
    assert fit_limit(bank, photos, bank_quantile=1.0, towards_photos=0.0) == pytest.approx(0.1)
    assert fit_limit(bank, [0.05, 0.05], bank_quantile=1.0, towards_photos=0.5) is None  # does not separate
    with pytest.raises(ValueError):
        fit_limit(bank, photos, bank_quantile=0.2, towards_photos=0.5)


def test_fit_limits_keeps_only_the_signals_that_separate() -> None:
    bank = [dict.fromkeys(SIGNALS, 0.0) for _ in range(10)]
    photos = [{**dict.fromkeys(SIGNALS, 0.0), "colour": 0.4} for _ in range(3)]
    assert fit_limits(bank, photos, bank_quantile=1.0).limits == {"colour": pytest.approx(0.2)}


# ----------------------------------------------------------------------------- what no photograph shows


def test_neighbour_correlation_on_known_values() -> None:
    ramp = np.tile(np.linspace(0, 1, 32, dtype=np.float32), (32, 1))
    assert neighbour_correlation(ramp) == pytest.approx(1.0)  # across: a perfect line; down: nothing varies
    checker = (np.indices((32, 32)).sum(0) % 2).astype(np.float32)
    assert neighbour_correlation(checker) == pytest.approx(-1.0)  # every neighbour is the opposite
    noise = np.random.default_rng(0).random((96, 96), dtype=np.float32)
    assert abs(neighbour_correlation(noise)) < 0.05
    assert neighbour_correlation(np.full((8, 8), 0.3, np.float32)) == 1.0  # nothing to correlate


def test_detail_share_on_known_values() -> None:
    assert detail_share(np.full((16, 16), 0.5, np.float32)) == 0.0
    ramp = np.tile(np.linspace(0, 1, 96, dtype=np.float32), (64, 1))  # steps of 1/95: under 0.02
    assert detail_share(ramp) == 0.0
    assert detail_share(ramp * 0.1 + 0.2) == 0.0  # stretched to its own range first: still smooth
    checker = (np.indices((16, 16)).sum(0) % 2).astype(np.float32) * 0.1  # a faint texture, stretched: detail
    assert detail_share(checker) == 1.0


def test_a_page_of_text_is_a_blank_page_and_a_colour_picture_is_not() -> None:
    page = np.ones((40, 40), np.float32)
    page[10:12, 5:35] = 0.0  # two lines of "text"
    page[20:22, 5:35] = 0.0
    rgb = np.repeat(page[..., None], 3, axis=2)
    assert blank_page(page, rgb) == pytest.approx(1 - 120 / 1600)
    assert blank_page(1 - page, 1 - rgb) == 0.0  # a dark picture is no page
    cream = rgb * np.array([1.0, 0.96, 0.9], np.float32)  # off-white paper is still paper
    assert blank_page(cream.mean(axis=2), cream) == pytest.approx(1 - 120 / 1600)
    tinted = rgb * np.array([1.0, 0.8, 0.6], np.float32)  # colour: a photograph's, not paper's
    assert blank_page(tinted.mean(axis=2), tinted) == 0.0


def test_photo_limits_sit_half_way_from_the_highest_photograph_to_one() -> None:
    photos = [{"pixel_noise": 0.2, "no_detail": 0.6, "blank_page": 0.0},
              {"pixel_noise": 0.4, "no_detail": 0.2, "blank_page": 0.0}]
    assert fit_photo_limits(photos).limits == pytest.approx({"pixel_noise": 0.7, "no_detail": 0.8, "blank_page": 0.5})
    with pytest.raises(ValueError):
        fit_photo_limits([])


def test_a_nan_signal_is_never_within_its_limit() -> None:
    limits = SignalLimits({"colour": 0.2, "border_level": 0.3})
    assert limits.check({"colour": 0.1, "border_level": 0.1}) == []
    assert limits.check({"colour": math.nan, "border_level": 0.1}) == ["colour"]
    assert limits.check({"colour": 0.5}) == ["colour", "border_level"]  # a missing signal counts as exceeded
    assert limits.reason(["colour"]) == "colour in the picture"


# ============================================================================ hostile statistics files

def good_config(**changes: object) -> dict:
    return {"method": METHOD, "threshold": 10.0, "flag_rate": 0.05, "dim": 4, **changes}


def good_tensors(dim: int = 4, **changes: torch.Tensor) -> dict[str, torch.Tensor]:
    tensors = {"mean": torch.zeros(dim), "precision": torch.eye(dim), "reference": torch.linspace(0, 20, 50)}
    return {**tensors, **changes}


def test_a_good_config_and_tensors_pass() -> None:
    checked = check_config(good_config(), "bank/familiarity", method=METHOD)
    assert checked["threshold"] == 10.0 and checked["flag_rate"] == 0.05 and checked["input_signals"] is None
    mean, precision, reference = check_tensors(good_tensors(), "bank", dim=4, feature_dim=4)
    assert mean.dtype == torch.float32 and reference[0] == 0 and precision.shape == (4, 4)


@pytest.mark.parametrize(("changes", "words"), [
    ({"flag_rate": "abc"}, "'flag_rate' must be a number, got str"),
    ({"flag_rate": True}, "'flag_rate' must be a number, got bool"),
    ({"flag_rate": 0.9}, "'flag_rate' must be a finite number in"),
    ({"threshold": float("nan")}, "'threshold' must be a finite number"),
    ({"threshold": None}, "'threshold' is missing"),
    ({"threshold": "1e3"}, "'threshold' must be a number"),
    ({"method": "pickle"}, "unknown familiarity method"),
    ({"dim": 10_000}, "'dim' must be a finite number in"),
    ({"input_signals": {"limits": {"colour": "high"}}}, "'colour' must be a number"),
    ({"input_signals": {"limits": {"colour": 2.0}}}, "'colour' must be a finite number in \\[0, 1\\]"),
    ({"input_signals": {"limits": {"secret": 0.1}}}, "unknown input signal"),
    ({"input_signals": {"applies": "yes"}}, "'input_signals.applies' must be true or false"),
    ({"input_signals": [1, 2]}, "'input_signals' must be a JSON object"),
])
def test_hostile_config_values_are_refused_naming_the_key(changes: dict, words: str) -> None:
    with pytest.raises(CorruptWeightsError, match=words):
        check_config(good_config(**changes), "bank/familiarity", method=METHOD)


def test_a_config_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(CorruptWeightsError, match="JSON object"):
        check_config([1, 2, 3], "bank/familiarity", method=METHOD)
    assert check_signal_config(None, "x") is None


@pytest.mark.parametrize(("tensors", "words"), [
    (good_tensors(mean=torch.full((4,), math.nan)), "'mean' holds NaN"),
    (good_tensors(precision=torch.full((4, 4), math.inf)), "'precision' holds NaN or infinite"),
    (good_tensors(reference=torch.full((50,), math.nan)), "'reference' holds NaN"),
    (good_tensors(reference=-torch.ones(50)), "negative"),
    (good_tensors(precision=torch.eye(3)), "'precision' must be 4x4"),
    (good_tensors(mean=torch.zeros(4, dtype=torch.int64)), "floating-point"),
    (good_tensors(reference=torch.ones(3)), "'reference' must be a vector"),
    ({"mean": torch.zeros(4)}, "lacks precision, reference"),
])
def test_hostile_tensors_are_refused(tensors: dict, words: str) -> None:
    with pytest.raises(CorruptWeightsError, match=words):
        check_tensors(tensors, "bank/familiarity", dim=4)


def test_statistics_of_another_size_than_the_network_are_refused() -> None:
    with pytest.raises(CorruptWeightsError, match="statistics of 100 features, but this bank's network gives 56"):
        check_tensors(good_tensors(dim=100), "bank/familiarity", feature_dim=56)
    with pytest.raises(CorruptWeightsError, match=r"config\.json says dim 56"):
        check_tensors(good_tensors(dim=100), "bank/familiarity", dim=56)


# ============================================================================ the inversion's levelled background

def test_level_background_sets_a_grey_background_to_black() -> None:
    from kf_model.data.preprocess import level_background

    paper = np.full((10, 10, 1), 0.1, dtype=np.float32)  # an inverted sheet of paper: grey 0.1 ...
    paper[4:6, 4:6] = 0.82  # ... with an ink stroke
    levelled = level_background(paper)
    assert levelled[0, 0, 0] == 0.0 and levelled[5, 5, 0] == pytest.approx(0.8)
    black = np.zeros((10, 10, 1), dtype=np.float32)
    black[4:6, 4:6] = 0.5
    np.testing.assert_array_equal(level_background(black), black)  # an exact inversion: unchanged
    bright = np.full((10, 10, 1), 0.7, dtype=np.float32)
    np.testing.assert_array_equal(level_background(bright), bright)  # no dark background: unchanged


def test_an_inverted_drawing_on_paper_reaches_the_network_on_black() -> None:
    from kf_model.data.preprocess import image_to_tensor
    from kf_model.data.specs import InputSpec

    sheet = np.full((64, 64), 230, dtype=np.uint8)
    sheet[20:44, 20:44] = 30  # a dark square drawn on light grey paper
    spec = InputSpec(channels=1, size=64, mean=(0.0,), std=(1.0,))
    x = image_to_tensor(Image.fromarray(sheet, mode="L"), spec, invert=None)
    assert x[0, 0, 0, 0] == 0.0 and x[0, 0, 32, 32] == pytest.approx((225 - 25) / (255 - 25))  # ink, stretched
