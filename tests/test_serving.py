"""kf_model.serving: the app's prediction function called directly, with both banks and every bad input."""

from __future__ import annotations

import gc
import json
import os
import shutil
import threading
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kf_model import FactorBank, serving
from kf_model.errors import (
    BankNotFoundError,
    BusyError,
    HubUnavailableError,
    InvalidImageError,
    KFError,
    UnknownTaskError,
    name_list,
)
from kf_model.serving import BankRegistry, PredictionGate, RequestError
from tests.app_fixtures import make_bank, write_banks, write_images

BANKS = ("dsprites", "fashion-mnist")


@pytest.fixture(scope="module")
def banks_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_banks(tmp_path_factory.mktemp("banks"))


@pytest.fixture(scope="module")
def registry(banks_dir: Path) -> BankRegistry:
    return BankRegistry(banks_dir)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_images(tmp_path_factory.mktemp("images"))


def processed(registry: BankRegistry, image, bank: str = "dsprites", **kwargs) -> torch.Tensor:
    return registry.predict(image, bank, ["shape" if bank == "dsprites" else "coat"], **kwargs).processed


# ----------------------------------------------------------------------------- predictions

@pytest.mark.parametrize("bank", BANKS)
def test_predict_every_task_of_both_banks(registry: BankRegistry, images: dict[str, Path], bank: str) -> None:
    entry = registry.get(bank)
    result = registry.api_predict(str(images["grey.png"]), bank, entry.task_names)
    assert result.pop("_input")["expects"]
    assert list(result) == entry.task_names
    for task in entry.tasks:
        probabilities = result[task.name]
        assert list(probabilities) == list(task.labels)
        assert all(0.0 <= p <= 1.0 for p in probabilities.values())
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    json.dumps(result)  # plain JSON


def test_tasks_come_back_in_bank_order_and_match_the_factor_networks(registry: BankRegistry,
                                                                     images: dict[str, Path]) -> None:
    prediction = registry.predict(images["grey.png"], "dsprites", ["pos_x", "shape"])
    assert prediction.tasks == ["shape", "pos_x"]
    bank = registry.get("dsprites").bank
    x = prediction.processed[None].to(bank.device)
    for task in prediction.tasks:  # assembly is exact: the same numbers as each factor network alone
        with torch.no_grad():
            alone = bank.factor(task)(x).float().softmax(-1)[0].cpu()
        got = torch.tensor(list(prediction.probabilities[task].values()))
        torch.testing.assert_close(got, alone, atol=1e-3 if x.is_cuda else 1e-5, rtol=0)


def test_networks_are_cached_per_task_set(registry: BankRegistry) -> None:
    entry = registry.get("dsprites")
    first = entry.network(["shape", "scale"])
    assert entry.network(["shape", "scale"]) is first
    assert entry.network(["shape"]) is not first
    assert next(first.parameters()).device.type == registry.device.type
    assert entry.network(["shape"]).ckn is first.ckn is not entry.bank.ckn  # one folded copy of the CKN, shared


def test_a_pil_image_is_accepted(registry: BankRegistry, images: dict[str, Path]) -> None:
    with Image.open(images["grey.png"]) as image:
        from_pil = processed(registry, image.copy())
    assert torch.equal(from_pil, processed(registry, images["grey.png"]))


def test_dataset_examples_reach_the_network_exactly(registry: BankRegistry) -> None:
    """A bundled example PNG gives exactly the dataset's tensor; its '-on-white' twin is inverted back."""
    examples = serving.load_examples()
    if not examples:
        pytest.skip("assets/examples/ not generated")
    from kf_model.data import load_dataset

    for example in (e for e in examples if e.reference is None):  # photo examples: no dataset tensor to match
        meta = json.loads((example.path.parent / serving.EXAMPLES_FILE).read_text())
        record = next(r for r in meta["examples"] if r["file"] == example.path.name)
        try:
            dataset = load_dataset(example.dataset, record["split"])
        except KFError as error:
            pytest.skip(f"dataset unavailable: {error}")
        image, targets = dataset[record["index"]]
        assert example.labels == {t.name: t.labels[int(y)] for t, y in zip(dataset.tasks, targets)}
        got = processed(registry, example.path, example.dataset)
        if example.inverted:
            assert registry.predict(example.path, example.dataset, ["shape" if example.dataset == "dsprites"
                                                                    else "coat"]).inverted
            assert (got - image).abs().mean() < 0.05
        else:
            assert torch.equal(got, image), example.path.name


def test_the_bundled_banks_recognise_their_examples() -> None:
    """With the trained banks of assets/factors/ (skipped until they are there): most examples come out right."""
    present = [name for name in BANKS if (serving.FACTORS_DIR / name / "factors.json").is_file()]
    examples = serving.load_examples()
    if not present or not examples:
        pytest.skip("no trained bundled bank (assets/factors/) or no examples yet")
    registry = BankRegistry(serving.FACTORS_DIR, warmup=False)
    for name in present:
        entry = registry.get(name)
        mine = [e for e in examples if e.dataset == name]
        correct = 0
        for example in mine:
            prediction = registry.predict(example.path, name, entry.task_names)
            if entry.one_vs_rest:
                combined = prediction.combined()
                correct += max(combined, key=combined.get) == next(
                    label for label in example.labels.values() if not label.startswith("not "))
            else:
                correct += prediction.top("shape", 1)[0][0] == example.labels["shape"]
        assert correct > len(mine) / 2, f"{name}: {correct}/{len(mine)} examples right"


# ----------------------------------------------------------------------------- conversions

@pytest.mark.parametrize("name, note", [
    ("palette.png", "palette"), ("i16.png", "16-bit"), ("animated.gif", "first frame"),
])
def test_unusual_modes_give_the_same_input_as_the_plain_image(registry: BankRegistry, images: dict[str, Path],
                                                              name: str, note: str) -> None:
    prediction = registry.predict(images[name], "dsprites", ["shape"])
    assert any(note in n for n in prediction.notes), prediction.notes
    assert torch.equal(prediction.processed, processed(registry, images["grey.png"]))


def test_cmyk_jpeg_is_converted(registry: BankRegistry, images: dict[str, Path]) -> None:
    prediction = registry.predict(images["cmyk.jpg"], "dsprites", ["shape"])
    assert any("CMYK" in n for n in prediction.notes)
    assert (prediction.processed - processed(registry, images["grey.png"])).abs().max() < 0.1  # JPEG is lossy


def test_dark_strokes_on_transparency_become_light_on_dark(registry: BankRegistry, images: dict[str, Path]) -> None:
    prediction = registry.predict(images["rgba.png"], "dsprites", ["shape"])
    assert prediction.inverted
    assert any("onto white" in n for n in prediction.notes)
    torch.testing.assert_close(prediction.processed, processed(registry, images["grey.png"]), atol=1e-6, rtol=0)


def test_light_backgrounds_are_inverted_unless_told_otherwise(registry: BankRegistry,
                                                              images: dict[str, Path]) -> None:
    auto = registry.predict(images["on_white.png"], "fashion-mnist", ["coat"])
    assert auto.inverted and any("inverted" in n for n in auto.notes)
    torch.testing.assert_close(auto.processed, processed(registry, images["grey.png"], "fashion-mnist"),
                               atol=1e-6, rtol=0)
    kept = registry.predict(images["on_white.png"], "fashion-mnist", ["coat"], invert=False)
    assert not kept.inverted and kept.processed.mean() > 0.5
    assert not registry.predict(images["grey.png"], "fashion-mnist", ["coat"]).inverted


@pytest.mark.parametrize("name", ["big.png", "wide.png"])
def test_large_and_extreme_images_are_downscaled_first(registry: BankRegistry, images: dict[str, Path],
                                                       name: str) -> None:
    prediction = registry.predict(images[name], "dsprites", ["shape"])
    assert any("downscaled" in n for n in prediction.notes)
    assert prediction.processed.shape == (1, 64, 64)
    if name == "big.png":  # a 40x blow-up of the square still looks like the square
        assert (prediction.processed - processed(registry, images["grey.png"])).abs().mean() < 0.05


def test_preview_is_upscaled_by_an_integer_factor(registry: BankRegistry, images: dict[str, Path]) -> None:
    preview = registry.predict(images["grey.png"], "fashion-mnist", ["coat"]).preview()
    assert preview.size == (224, 224) and preview.mode == "L"


# ----------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("name, message", [
    ("text.png", "not an image"),
    ("truncated.png", "truncated or corrupt"),
    ("empty.png", "empty"),
    ("bomb.png", "megapixels"),
    ("over_limit.png", "megapixels"),
])
def test_bad_files_are_refused_with_a_clear_message(registry: BankRegistry, images: dict[str, Path], name: str,
                                                    message: str) -> None:
    with pytest.raises(InvalidImageError, match=message) as info:
        registry.predict(images[name], "dsprites", ["shape"])
    assert "Traceback" not in str(info.value) and str(images[name].parent) not in str(info.value)


def test_decompression_bomb_is_refused_from_its_header_whatever_pillows_limit(
        registry: BankRegistry, images: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # someone disabled Pillow's guard: ours still holds
    with pytest.raises(InvalidImageError, match="megapixels"):
        registry.predict(images["bomb.png"], "dsprites", ["shape"])


def test_oversized_file_and_missing_file(registry: BankRegistry, images: dict[str, Path],
                                         monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(serving.images, "MAX_FILE_BYTES", 100)
    with pytest.raises(InvalidImageError, match="limit is"):
        registry.predict(images["big.png"], "dsprites", ["shape"])
    with pytest.raises(InvalidImageError, match="does not exist"):
        registry.predict(tmp_path / "nothing.png", "dsprites", ["shape"])


@pytest.mark.parametrize("image", [None, ""])
def test_no_image(registry: BankRegistry, image) -> None:
    with pytest.raises(RequestError, match="no image"):
        registry.predict(image, "dsprites", ["shape"])


@pytest.mark.parametrize("tasks", [[], None, [""]])
def test_no_task(registry: BankRegistry, images: dict[str, Path], tasks) -> None:
    with pytest.raises(RequestError, match="no task ticked"):
        registry.predict(images["grey.png"], "dsprites", tasks)


def test_unknown_task_lists_the_known_ones(registry: BankRegistry, images: dict[str, Path]) -> None:
    with pytest.raises(UnknownTaskError, match=r"'colour'.*'shape', 'scale', 'orientation', 'pos_x', 'pos_y'$"):
        registry.predict(images["grey.png"], "dsprites", ["shape", "colour"])
    with pytest.raises(UnknownTaskError, match="'shape'"):  # a task of the other bank
        registry.predict(images["grey.png"], "fashion-mnist", ["shape"])


@pytest.mark.parametrize("tasks", [5, [1, 2], [["shape"]], {"shape": 1.5}.values(), b"shape"])
def test_tasks_that_are_not_names_are_refused_in_words(registry: BankRegistry, images: dict[str, Path], tasks) -> None:
    with pytest.raises(RequestError, match=r"tasks must be a list of task names.*'shape', 'scale'"):
        registry.predict(images["grey.png"], "dsprites", tasks)


def test_task_names_are_trimmed_like_bank_names(registry: BankRegistry, images: dict[str, Path]) -> None:
    assert registry.predict(images["grey.png"], " dsprites ", [" shape ", "scale"]).tasks == ["shape", "scale"]
    assert registry.predict(images["grey.png"], "dsprites", (" shape", "scale ")).tasks == ["shape", "scale"]


def test_an_image_of_one_flat_colour_is_flagged_on_every_bank(registry: BankRegistry) -> None:
    """Nothing to recognise in it: flagged before the network even where the bank has no statistics (dSprites'
    passed a black square as familiar, its own images being mostly black)."""
    for image in (Image.new("L", (64, 64), 0), Image.new("RGB", (300, 200), (250, 250, 250))):
        prediction = registry.predict(image, "dsprites", ["shape"])
        assert prediction.unfamiliar and "one flat colour" in prediction.familiarity["reason"]


def test_name_list_names_a_handful_and_counts_the_rest() -> None:
    assert name_list([]) == ""
    assert name_list(["a"]) == "'a'"
    assert name_list(["a", "b", "c"]) == "'a', 'b', 'c'"
    assert name_list(f"t{i}" for i in range(10_000)) == "'t0', 't1', 't2', 't3', 't4' and 9,995 more"
    assert name_list(["a", "b", "c"], limit=2) == "'a', 'b' and 1 more"
    assert name_list(["a", "b"], limit=0) == "2 names"
    assert name_list(["x" * 1_000_000]) == repr("x" * 57 + "...")  # one huge name stays short too


def test_refusals_of_huge_requests_stay_short(registry: BankRegistry, images: dict[str, Path]) -> None:
    with pytest.raises(UnknownTaskError) as info:
        registry.predict(images["grey.png"], "dsprites", [f"task-{i}" for i in range(10_000)])
    message = str(info.value)
    assert "'task-0', 'task-1', 'task-2', 'task-3', 'task-4' and 9,995 more" in message and len(message) < 300
    with pytest.raises(UnknownTaskError, match=r"'y{57}\.\.\.', 'z' for") as info:  # one huge name, cut
        registry.predict(images["grey.png"], "dsprites", ["shape", "y" * 100_000, "z"])
    assert len(str(info.value)) < 300
    with pytest.raises(BankNotFoundError, match="100,004 characters") as info:
        registry.predict(images["grey.png"], "a/" + "b" * 100_000 + "@c", ["shape"])
    assert len(str(info.value)) < 300


@pytest.mark.parametrize("bank, message", [
    ("nope", "unknown bank"), ("../etc", "not a (valid )?Hub repo id"), ("kf tests/bad id", "not a valid Hub repo id"),
])
def test_unknown_or_unsafe_bank_names(registry: BankRegistry, images: dict[str, Path], bank: str,
                                      message: str) -> None:
    with pytest.raises(BankNotFoundError, match=message):
        registry.predict(images["grey.png"], bank, ["shape"])


def test_a_repo_id_that_names_a_local_folder_is_never_read_from_disk(registry: BankRegistry, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    make_bank("dsprites").save_pretrained(tmp_path / "owner" / "bank")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BankNotFoundError, match="local path"):
        registry.get("owner/bank")


def test_a_registry_without_hub_serves_only_bundled_banks(banks_dir: Path) -> None:
    registry = BankRegistry(banks_dir, allow_hub=False, warmup=False)
    with pytest.raises(BankNotFoundError, match="only its bundled banks"):
        registry.get("kf-tests/anything")


def test_no_bundled_banks_is_not_fatal(tmp_path: Path) -> None:
    registry = BankRegistry(tmp_path / "absent")
    assert registry.keys == [] and registry.default is None
    with pytest.raises(RequestError, match="no bundled bank"):
        registry.get(None)


def test_a_broken_bundled_bank_is_reported_and_skipped(tmp_path: Path) -> None:
    make_bank("dsprites").save_pretrained(tmp_path / "good")
    broken = make_bank("dsprites").save_pretrained(tmp_path / "broken")
    (broken / "ckn" / "model.safetensors").write_bytes(b"garbage")
    registry = BankRegistry(tmp_path, warmup=False)
    assert registry.keys == ["good"]
    assert any("broken" in p for p in registry.problems)


def test_is_blank() -> None:
    assert serving.is_blank(None)
    assert serving.is_blank(Image.new("RGBA", (8, 8), (255, 255, 255, 255)))
    assert serving.is_blank(Image.new("RGBA", (8, 8), (0, 0, 0, 0)))
    drawn = Image.new("RGBA", (8, 8), (255, 255, 255, 255))
    drawn.putpixel((3, 3), (0, 0, 0, 255))
    assert not serving.is_blank(drawn)


# ----------------------------------------------------------------------------- accounting, explain, export

def test_summary_counts_parameters_and_bytes(registry: BankRegistry) -> None:
    entry = registry.get("dsprites")
    counts = entry.parameter_counts(["shape", "scale"])
    text = serving.summary_markdown(entry, ["scale", "shape"])
    assert f"{counts['ckn'] + counts['shape'] + counts['scale']:,}" in text
    assert f"{2 * counts['ckn'] + counts['shape'] + counts['scale']:,}" in text
    assert "123,456" in text  # the teacher, from the manifest
    size = entry.bytes_loaded(["shape", "scale"])
    assert size == sum(p.stat().st_size for p in entry.files(["shape", "scale"]))
    assert entry.bytes_loaded(["shape"]) < size
    assert "No task ticked" in serving.summary_markdown(entry, [])


def test_explain_uses_evaluation_outputs_when_present(registry: BankRegistry) -> None:
    with_evaluation = serving.explain_markdown(registry.get("dsprites"))
    assert with_evaluation["leakage"] is not None and with_evaluation["leakage"].name == "leakage.png"
    assert "Test report" in with_evaluation["report"] and "32,000" in with_evaluation["parameters"]
    assert "| shape |" in with_evaluation["metrics"]
    without = serving.explain_markdown(registry.get("fashion-mnist"))
    assert without["leakage"] is None and without["report"] is None and without["figures"] == []
    assert "No leakage heat map" in without["leakage_note"] and "CKN S + 10 TSNs" in without["parameters"]


def test_explain_follows_the_ticked_tasks_in_words_and_percentages(registry: BankRegistry) -> None:
    entry = registry.get("dsprites")
    counts = entry.parameter_counts(["shape", "scale"])
    text = serving.explain_markdown(entry, ["scale", "shape"])
    assert "| shape |" in text["metrics"] and "| pos_x |" not in text["metrics"]
    assert "2 ticked of 5 tasks" in text["metrics"] and "CKN S + 2 TSNs" in text["parameters"]
    assert f"{counts['ckn'] + counts['shape'] + counts['scale']:,}" in text["parameters"]
    assert "50.00 %" in text["metrics"] and "teacher" in text["metrics"]  # 0.5 -> a percentage, keys -> words
    assert "teacher_accuracy" not in text["metrics"] and "0.5000" not in text["metrics"]
    assert "**Recognises:**" in text["metrics"]
    assert serving.format_metric("leakage_tsn_off_diagonal_excess", 0.14365) == "14.4 pts"
    assert serving.format_metric("assembly_max_abs_diff", 3.8e-06) == "3.8e-06"


@pytest.mark.parametrize("text, revision, key", [
    ("org/bank", None, "org/bank"),
    (" org/bank@v1 ", None, "org/bank@v1"),
    ("org/bank", "v2", "org/bank@v2"),
    ("https://huggingface.co/org/bank", None, "org/bank"),
    ("https://huggingface.co/org/bank/", "dev", "org/bank@dev"),
    ("https://huggingface.co/org/bank/tree/v1", None, "org/bank@v1"),
    ("https://hf.co/org/bank/tree/main?x=1", None, "org/bank@main"),
    ("huggingface.co/models/org/bank", None, "org/bank"),
])
def test_hub_references_a_person_pastes_are_parsed(text: str, revision: str | None, key: str) -> None:
    assert serving.parse_hub_reference(text, revision) == key


@pytest.mark.parametrize("text, message", [
    ("", "type a Hub repo id"), ("bank", "not a Hub repo id"), ("a/b/c", "not a Hub repo id"),
    ("https://huggingface.co/spaces/org/app", "is a space"), ("https://huggingface.co/datasets/org/d", "dataset"),
    ("https://huggingface.co/org/bank/blob/main/factors.json", "not the address of a model repo"),
    ("ftp://example.com/org/bank", "not a Hub repo id"),
])
def test_hub_references_that_are_not_banks_are_refused_in_words(text: str, message: str) -> None:
    with pytest.raises(BankNotFoundError, match=message):
        serving.parse_hub_reference(text)


def test_hub_failures_read_as_words_without_library_text() -> None:
    try:
        raise HubUnavailableError("cannot reach the Hub for x: ConnectError: [Errno -2] Name or service not known") \
            from ConnectionError("[Errno -2]")
    except HubUnavailableError as error:
        text = serving.plain_message(error)
    assert "cannot reach the Hugging Face Hub" in text and "Errno" not in text and "ConnectError" not in text


def test_the_one_answer_of_one_vs_rest_banks(registry: BankRegistry, images: dict[str, Path]) -> None:
    prediction = registry.predict(str(images["grey.png"]), "fashion-mnist", ["coat", "bag", "sneaker"])
    prediction.probabilities = {"coat": {"not Coat": 0.9, "Coat": 0.1}, "bag": {"not Bag": 0.7, "Bag": 0.3},
                                "sneaker": {"not Sneaker": 0.8, "Sneaker": 0.2}}
    headline, combined = prediction.answer()
    assert headline.startswith("None of the 3 ticked classes") and "Bag" in headline and combined["Bag"] == 0.3
    assert [row[:3] for row in prediction.table()] == [["coat", "not Coat", 90.0], ["sneaker", "not Sneaker", 80.0],
                                                       ["bag", "not Bag", 70.0]]  # the bank's order
    prediction.probabilities["bag"] = {"not Bag": 0.2, "Bag": 0.8}
    assert prediction.answer()[0] == "Bag (80%)"


def test_an_untested_tasks_no_is_not_an_answer(registry: BankRegistry, images: dict[str, Path]) -> None:
    """A factor that never saw one of its class says "no" to it (the photograph bank's cat factor to a cat): the
    headline and the table say the bank cannot tell, not "not Coat, 90 %"."""
    prediction = registry.predict(str(images["grey.png"]), "fashion-mnist", ["coat", "bag", "sneaker"])
    prediction.probabilities = {"coat": {"not Coat": 0.9, "Coat": 0.1}, "bag": {"not Bag": 0.7, "Bag": 0.3},
                                "sneaker": {"not Sneaker": 0.8, "Sneaker": 0.2}}
    prediction.untested = {"coat": "never seen", "bag": "never seen"}
    headline, _ = prediction.answer()
    assert headline == ("None of the ticked classes the bank was checked on (Sneaker is at 20%); it cannot tell "
                        "Coat, Bag (untested)")
    assert [row[:3] for row in prediction.table()] == [["coat", "cannot tell", 10.0], ["sneaker", "not Sneaker", 80.0],
                                                       ["bag", "cannot tell", 30.0]]
    prediction.untested["sneaker"] = "never seen"
    assert prediction.answer()[0] == "Cannot tell: the bank was never checked on Coat, Sneaker, Bag (untested)"
    prediction.probabilities["bag"] = {"not Bag": 0.4, "Bag": 0.6}
    assert prediction.answer()[0] == ("Cannot tell: Bag scores 60%, but this bank was never checked on Bag "
                                      "(untested)") and prediction.table()[2][1] == "Bag (unchecked)"
    prediction.untested.pop("sneaker")
    prediction.probabilities["sneaker"] = {"not Sneaker": 0.3, "Sneaker": 0.7}
    assert prediction.answer()[0] == "Sneaker (70%)"  # a checked "yes" is the answer, an unchecked one never
    single = registry.predict(str(images["grey.png"]), "fashion-mnist", ["coat"])
    assert single.answer() is None  # one ticked task: its row says it all
    shapes = registry.predict(str(images["grey.png"]), "dsprites", ["shape"])
    assert shapes.answer() is None and shapes.table()[0][0] == "shape"


def test_export_zip_loads_back_with_only_the_ticked_tasks(registry: BankRegistry, tmp_path: Path) -> None:
    archive = registry.export_zip("dsprites", ["scale", "shape"], tmp_path / "out")
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(tmp_path / "unzipped")
    (folder,) = list((tmp_path / "unzipped").iterdir())
    loaded = FactorBank.from_pretrained(folder)
    assert [t.name for t in loaded.tasks] == ["shape", "scale"]
    assert {p.name for p in (folder / "tsn").iterdir()} == {"shape", "scale"}
    original = registry.get("dsprites").bank
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        want = original.to("cpu").assemble(["shape", "scale"])(x)
        original.to(registry.device)
        got = loaded.assemble()(x)
    for task in ("shape", "scale"):
        torch.testing.assert_close(got[task], want[task])


def test_export_onnx_runs_the_ticked_tasks_in_onnxruntime(registry: BankRegistry, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is a dependency (requirements.txt)")
    path = registry.export_onnx("dsprites", ["scale", "shape"], tmp_path / "out")
    assert path.name == "kf-dsprites-shape-scale.onnx" and path.parent == tmp_path / "out"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["shape", "scale"]
    x = torch.rand(3, 1, 64, 64)
    bank = registry.get("dsprites").bank
    with torch.no_grad():
        want = bank.assemble(["shape", "scale"]).to("cpu")(x)
    got = session.run(None, {"image": x.numpy()})
    for task, logits in zip(("shape", "scale"), got):
        np.testing.assert_allclose(logits, want[task].numpy(), atol=1e-4)


# ----------------------------------------------------------------------------- the Hub

@pytest.fixture
def hub_bank(hub_server, hub_repo_id: str) -> str:
    make_bank("dsprites", seed=3).push_to_hub(hub_repo_id)
    hub_server.clear_log()
    return hub_repo_id


def test_hub_bank_downloads_only_what_is_ticked(banks_dir: Path, hub_server, hub_bank: str, hf_cache: Path,
                                                images: dict[str, Path]) -> None:
    registry = BankRegistry(banks_dir, warmup=False)
    entry = registry.get(hub_bank)
    assert entry.kind == "hub" and entry.token is False  # a user's repo never gets the app's token
    assert hub_server.downloaded_files(hub_bank) == ["factors.json"]
    result = registry.api_predict(str(images["grey.png"]), hub_bank, ["shape"])
    assert list(result) == ["shape", "_input"]
    assert sorted(hub_server.downloaded_files(hub_bank)) == sorted([
        "factors.json", "ckn/config.json", "ckn/model.safetensors", "tsn/shape/config.json",
        "tsn/shape/model.safetensors"])
    hub_server.clear_log()
    registry.api_predict(str(images["grey.png"]), hub_bank, ["shape", "pos_y"])  # only the new TSN comes down
    assert sorted(hub_server.downloaded_files(hub_bank)) == ["tsn/pos_y/config.json", "tsn/pos_y/model.safetensors"]
    assert entry.bytes_loaded(["shape"]) > 0
    assert registry.get(f"{hub_bank}@main").commit == entry.commit

    gate = PredictionGate(registry)  # through the gate: loads what is missing, then predicts; nothing twice
    hub_server.clear_log()
    assert gate.predict(images["grey.png"], hub_bank, ["scale"]).tasks == ["scale"]
    assert sorted(hub_server.downloaded_files(hub_bank)) == ["tsn/scale/config.json", "tsn/scale/model.safetensors"]
    hub_server.clear_log()
    assert gate.predict(images["grey.png"], hub_bank, ["scale", "shape"]).tasks == ["shape", "scale"]
    assert hub_server.downloaded_files(hub_bank) == [] and gate.loads_in_flight == 0


def test_a_hanging_load_of_new_tasks_never_delays_the_loaded_tasks_of_its_bank(
        banks_dir: Path, hub_bank: str, hf_cache: Path, images: dict[str, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    registry = BankRegistry(banks_dir, warmup=False)
    registry.load(hub_bank, ["shape"])
    original = FactorBank.from_pretrained
    release = threading.Event()
    entered = threading.Event()

    def hanging_for_pos_y(source, **kwargs):  # this bank's pos_y factor never finishes downloading
        if "pos_y" in (kwargs.get("tasks") or []):
            entered.set()
            release.wait(120)
            raise HubUnavailableError("pos_y never arrived")
        return original(source, **kwargs)

    monkeypatch.setattr(FactorBank, "from_pretrained", staticmethod(hanging_for_pos_y))
    gate = PredictionGate(registry, predictions=1, loads=1, waiting_loads=0)
    pool = ThreadPoolExecutor(max_workers=2)
    try:
        hanging = pool.submit(gate.predict, images["grey.png"], hub_bank, ["shape", "pos_y"])
        assert entered.wait(120)
        with pytest.raises(BusyError):  # the only load slot is taken
            gate.predict(images["grey.png"], hub_bank, ["scale"])
        for bank, tasks in ((hub_bank, ["shape"]), ("dsprites", ["shape"])):  # the loaded task, another bank
            answer = pool.submit(gate.predict, images["grey.png"], bank, tasks).result(timeout=120)
            assert answer.tasks == tasks
        assert not hanging.done()
    finally:
        release.set()
        pool.shutdown(wait=True)
    with pytest.raises(HubUnavailableError, match="pos_y never arrived"):
        hanging.result()
    assert gate.predict(images["grey.png"], hub_bank, ["shape"]).tasks == ["shape"]  # the bank still works


def test_a_hub_banks_familiarity_and_evaluation_are_fetched_at_its_commit(banks_dir: Path, hub_server, hub_repo_id: str,
                                                                          hf_cache: Path, tmp_path: Path,
                                                                          images: dict[str, Path]) -> None:
    from huggingface_hub import HfApi

    from kf_model.serving.familiarity import calibrate

    folder = make_bank("dsprites", seed=4).save_pretrained(tmp_path / "bank")
    calibrate(folder, train_limit=128, test_limit=64)
    write_banks(tmp_path / "with-evaluation")  # borrow the test evaluation folder of the bundled test bank
    shutil.copytree(tmp_path / "with-evaluation" / "dsprites" / "evaluation", folder / "evaluation")
    api = HfApi()
    api.create_repo(hub_repo_id, exist_ok=True)
    api.upload_folder(repo_id=hub_repo_id, folder_path=folder)
    registry = BankRegistry(banks_dir, warmup=False)
    entry = registry.get(hub_repo_id)
    prediction = registry.predict(str(images["grey.png"]), hub_repo_id, ["shape"])
    assert prediction.familiarity is not None and "white shape" in prediction.expects
    assert "familiarity/model.safetensors" in hub_server.downloaded_files(hub_repo_id)
    assert entry.fetch_evaluation() is not None
    explained = serving.explain_markdown(entry, ["shape"])
    assert "Test report" in explained["report"] and explained["leakage"].name == "leakage.png"


def test_default_bank_from_the_hub_and_its_failures(banks_dir: Path, hub_bank: str, hf_cache: Path) -> None:
    registry = BankRegistry(banks_dir, default_repo=hub_bank, warmup=False)
    assert registry.default == hub_bank and registry.get(None).token is None  # the operator's repo: env token
    missing = BankRegistry(banks_dir, default_repo="kf-tests/no-such-repo", warmup=False)
    assert missing.default == "dsprites"
    assert any("no-such-repo" in p for p in missing.problems)


def test_hub_refusals(registry: BankRegistry, hub_bank: str, hf_cache: Path, monkeypatch: pytest.MonkeyPatch,
                      images: dict[str, Path]) -> None:
    with pytest.raises(BankNotFoundError, match="not found"):
        registry.get("kf-tests/no-such-repo")
    with pytest.raises(BankNotFoundError, match="revision 'v9' not found"):
        registry.get(f"{hub_bank}@v9")
    import huggingface_hub.constants as constants
    from huggingface_hub.utils import _http

    monkeypatch.setattr(_http.time, "sleep", lambda seconds: None)  # the client retries 5 times with back-off
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        "http://127.0.0.1:9/{repo_id}/resolve/{revision}/{filename}")
    with pytest.raises(HubUnavailableError, match="kf-tests/unreachable"):
        registry.get("kf-tests/unreachable")
    assert registry.api_predict(str(images["grey.png"]), "dsprites", ["shape"])  # the bundled bank still works


# ----------------------------------------------------------------------------- loads apart from predictions

def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Synchronisation, not a timing assertion: the deadline only turns a hang into a failure."""
    deadline = time.monotonic() + 120
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)


def test_a_hanging_bank_load_never_holds_a_prediction_slot(banks_dir: Path, images: dict[str, Path],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    registry = BankRegistry(banks_dir, warmup=False)
    registry.load("dsprites", ["shape"])
    release = threading.Event()
    entered = threading.Semaphore(0)

    def hanging_fetch(repo_id: str, revision: str | None = None, *, token=False):  # a Hub that never answers
        entered.release()
        release.wait(120)
        raise HubUnavailableError(f"{repo_id} never answered")

    monkeypatch.setattr(serving.registry, "fetch_manifest", hanging_fetch)
    gate = PredictionGate(registry, predictions=1, loads=1, waiting_loads=1)
    assert gate.capacity == 3
    pool = ThreadPoolExecutor(max_workers=3)
    try:
        hanging = [pool.submit(gate.predict, images["grey.png"], f"evil/bank-{i}", ["shape"]) for i in range(2)]
        assert entered.acquire(timeout=120)  # one load runs (and hangs), the other waits for the load slot
        wait_until(lambda: gate.loads_in_flight == 2, "both loads admitted")
        with pytest.raises(BusyError, match="busy loading 2 other banks"):  # a third is refused at once
            gate.predict(images["grey.png"], "evil/bank-2", ["shape"])
        # the single prediction slot is free: a loaded bank answers while both loads still hang
        answer = pool.submit(gate.predict, images["grey.png"], "dsprites", ["shape"]).result(timeout=120)
        assert answer.tasks == ["shape"] and not any(future.done() for future in hanging)
        # a request refused without any I/O (unknown task of a loaded bank) needs no load slot either
        with pytest.raises(UnknownTaskError):
            gate.predict(images["grey.png"], "dsprites", ["colour"])
    finally:
        release.set()
        pool.shutdown(wait=True)
    for future in hanging:
        with pytest.raises(HubUnavailableError, match="never answered"):
            future.result()
    assert gate.loads_in_flight == 0
    assert gate.predict(images["grey.png"], "fashion-mnist", ["coat"]).tasks == ["coat"]  # a load, then an answer


def test_gate_refuses_a_request_without_an_image_before_loading(registry: BankRegistry,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serving.registry, "fetch_manifest", lambda *args, **kwargs: pytest.fail("nothing to load"))
    with pytest.raises(RequestError, match="no image"):
        PredictionGate(registry).predict(None, "evil/bank", ["shape"])
    with pytest.raises(ValueError, match="predictions >= 1"):
        PredictionGate(registry, predictions=0)


def test_scratch_dir_is_made_on_first_use_and_removed_with_its_owner() -> None:
    scratch = serving.ScratchDir("kf-test-scratch-")
    path = scratch.path
    assert path.is_dir() and path.name.startswith("kf-test-scratch-") and scratch.path == path
    (path / "file").write_text("x")
    scratch.cleanup()
    assert not path.exists()
    again = scratch.path
    assert again.is_dir() and again != path
    del scratch
    gc.collect()
    assert not again.exists()



def test_fresh_folders_replace_old_ones_and_concurrent_callers_do_not_collide() -> None:
    scratch = serving.ScratchDir("kf-test-scratch-")
    try:
        for round_ in range(5):  # each round: 12 old folders, removed by 8 threads at once
            for i in range(12):
                old = scratch.path / f"old-{round_}-{i}"
                (old / "inner").mkdir(parents=True)
                os.utime(old, (time.time() - 7200, time.time() - 7200))
            with ThreadPoolExecutor(8) as pool:
                made = list(pool.map(lambda _: scratch.fresh_folder(max_age_s=3600), range(8)))
            assert len(set(made)) == 8 and all(folder.is_dir() for folder in made)
            assert not any(path.name.startswith("old-") for path in scratch.path.iterdir())
    finally:
        scratch.cleanup()


# ----------------------------------------------------------------------------- examples generator

def test_generate_examples(tmp_path: Path) -> None:
    """It replaces only the PNGs its examples.json listed: the folder's other files (the photograph bank's
    examples, anyone's own) stay."""
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "keep.png").write_bytes(b"mine")
    try:
        first = serving.generate_examples(tmp_path / "examples", per_dataset=1)
        before = {p.name for p in first.glob("*.png")}
        out = serving.generate_examples(tmp_path / "examples", per_dataset=2)
    except KFError as error:  # pragma: no cover - the datasets are part of the test set-up
        pytest.skip(str(error))
    assert (out / "keep.png").read_bytes() == b"mine" and "keep.png" in before
    examples = serving.load_examples(out)
    datasets = {e.dataset for e in examples}
    assert datasets <= {"dsprites", "fashion-mnist"} and "dsprites" in datasets
    for example in examples:
        with Image.open(example.path) as image:
            assert image.mode == "L"
            assert image.size in ((64, 64), (28, 28)) or example.inverted
        assert example.labels and example.caption
    assert sum(e.inverted for e in examples) == len(datasets)
    assert np.all([e.path.parent == out for e in examples])


def test_auto_inversion_is_for_grey_banks_only() -> None:
    """A light border is inverted to light-on-dark for a grey bank (dSprites, Fashion-MNIST); a colour bank sees a
    photograph as it is (the photo bank once got china.jpg, camera and ColorfulCups inverted)."""
    from kf_model.data.specs import InputSpec

    light = Image.new("RGB", (32, 32), (230, 230, 230))
    grey = InputSpec(channels=1, size=28, mean=(0.0,), std=(1.0,))
    colour = InputSpec(channels=3, size=224, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert serving.should_invert(light, grey) and not serving.should_invert(light, colour)
    assert serving.should_invert(light, colour, invert=True) and not serving.should_invert(light, grey, invert=False)
    assert not serving.should_invert(Image.new("RGB", (32, 32)), grey)
