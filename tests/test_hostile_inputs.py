"""Issue 18 (third round): manifests, labels and caches as an attacker would push them; each is refused with a kf
error naming the input, early, or bounded.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kf_model import FactorBank, TaskSpec
from kf_model.errors import CorruptWeightsError, InvalidConfigError, KFError
from kf_model.limits import MAX_JSON_DEPTH, MAX_LABELS, MAX_MANIFEST_BYTES, json_depth, read_json
from kf_model.serving import BankRegistry, BoundedCache
from kf_model.serving.memory import banks_to_drop
from tests.app_fixtures import make_bank, write_banks, write_images


@pytest.fixture(scope="module")
def bank_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bank("dsprites", seed=1).save_pretrained(tmp_path_factory.mktemp("hostile") / "bank")


def hostile_copy(bank_dir: Path, tmp_path: Path, change) -> Path:
    """A copy of the bank whose factors.json ``change`` rewrote (change(data) -> data, or text)."""
    import shutil

    folder = Path(shutil.copytree(bank_dir, tmp_path / "copy"))
    data = json.loads((folder / "factors.json").read_text())
    changed = change(data)
    (folder / "factors.json").write_text(changed if isinstance(changed, str) else json.dumps(changed))
    return folder


# ----------------------------------------------------------------------------- item 3: manifest bounds

def huge_manifest(data):
    """A 180 MB factors.json used to be parsed (40 s, +1.3 GB); now its size is checked before it is read."""
    data["teacher"]["padding"] = "x" * (MAX_MANIFEST_BYTES + 1)


def many_labels(data):
    per_task = MAX_LABELS // 4 + 1  # each task under MAX_CLASSES, together over MAX_LABELS
    data["tasks"] = [{"name": f"t{i}", "labels": [str(j) for j in range(per_task)], "description": ""}
                     for i in range(4)]


@pytest.mark.parametrize(("change", "message"), [
    (huge_manifest, r"factors\.json is [\d,]+ bytes; kf reads at most"),
    (many_labels, f"labels in all; kf reads at most {MAX_LABELS:,}"),
])
def test_a_huge_manifest_is_refused_before_parsing(bank_dir: Path, tmp_path: Path, change, message: str) -> None:
    with pytest.raises(CorruptWeightsError, match=message):
        FactorBank.from_pretrained(hostile_copy(bank_dir, tmp_path, lambda data: change(data) or data))


def test_a_long_label_and_a_deeply_nested_manifest_are_refused(bank_dir: Path, tmp_path: Path) -> None:
    def long_label(data):
        data["tasks"][0]["labels"][0] = "x" * 10_000
        return data

    with pytest.raises(InvalidConfigError, match=r"labels\[0\] is 10,000 characters long"):
        FactorBank.from_pretrained(hostile_copy(bank_dir, tmp_path / "a", long_label))
    deep = hostile_copy(bank_dir, tmp_path / "b", lambda data: "[" * 100_000 + "]" * 100_000)
    with pytest.raises(CorruptWeightsError, match="nested deeper than"):
        FactorBank.from_pretrained(deep)


def test_read_json_bounds_depth_and_bytes(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"a": [[{"b": 1}]]}))
    assert read_json(path, "x") == {"a": [[{"b": 1}]]}
    assert json_depth({"a": [[{"b": 1}]]}) == 4 and json_depth(3) == 0
    path.write_text("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1))
    with pytest.raises(InvalidConfigError, match="x: nested deeper than 64 levels"):
        read_json(path, "x")
    path.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(InvalidConfigError, match="cannot read x"):
        read_json(path, "x")
    with pytest.raises(InvalidConfigError, match="x is 10 bytes; kf reads at most 4"):
        read_json(path, "x", max_bytes=4)


def test_a_huge_hub_manifest_is_refused_before_it_is_downloaded(bank_dir: Path, hub_server, hub_repo_id: str,
                                                                hf_cache: Path) -> None:
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(hub_repo_id)
    api.upload_folder(repo_id=hub_repo_id, folder_path=bank_dir)
    manifest = json.loads((bank_dir / "factors.json").read_text())
    manifest["teacher"]["padding"] = "x" * MAX_MANIFEST_BYTES
    hub_server.commit(hub_repo_id, {"factors.json": json.dumps(manifest).encode()})
    hub_server.clear_log()
    registry = BankRegistry(None, warmup=False)
    with pytest.raises(CorruptWeightsError, match=r"factors\.json is [0-9,]+ bytes; kf reads at most"):
        registry.get(hub_repo_id)
    assert hub_server.downloaded_files(hub_repo_id) == []  # refused from its size, never downloaded


# ----------------------------------------------------------------------------- item 3: Hub banks bounded by bytes

def test_hub_banks_are_bounded_by_bytes_and_revisions_count(tmp_path: Path, hub_server, hub_repo_id: str,
                                                            hf_cache: Path) -> None:
    make_bank("dsprites", seed=2).push_to_hub(hub_repo_id)
    for tag in ("v1", "v2", "v3"):
        hub_server.create_tag(hub_repo_id, tag)
    images = write_images(tmp_path / "images")
    registry = BankRegistry(write_banks(tmp_path / "banks"), warmup=False)
    registry.predict(images["grey.png"], f"{hub_repo_id}@v1", ["shape"])
    one = registry.hub_bytes
    assert one > 0
    registry.max_hub_bytes = int(2.5 * one)  # room for two of these banks, whatever the count allows
    for tag in ("v2", "v3"):
        registry.predict(images["grey.png"], f"{hub_repo_id}@{tag}", ["shape"])
    hub_keys = [key for key in registry.keys if key not in registry.bundled]
    assert hub_keys == [f"{hub_repo_id}@v2", f"{hub_repo_id}@v3"]  # the least recently used revision went
    assert registry.hub_bytes <= registry.max_hub_bytes
    assert set(registry.bundled) == {"dsprites", "fashion-mnist"}  # bundled banks are never dropped


def test_banks_to_drop_keeps_the_newest() -> None:
    weights = {"a": 10, "b": 10, "c": 10}
    from collections import OrderedDict

    assert banks_to_drop(OrderedDict(weights), 8, 25) == ["a"]
    assert banks_to_drop(OrderedDict(weights), 1, 1000) == ["a", "b"]
    assert banks_to_drop(OrderedDict(weights), 8, 5) == ["a", "b"]  # the newest stays, alone over budget
    assert banks_to_drop(OrderedDict(weights), 8, 30) == []


# ----------------------------------------------------------------------------- item 11: network cache by bytes

def test_the_network_cache_is_bounded_by_bytes() -> None:
    cache = BoundedCache(max_items=100, max_bytes=25, weigh=len)
    for key in "abc":
        cache.setdefault(key, "x" * 10)
    assert "a" not in cache and "b" in cache and "c" in cache and cache.bytes == 20
    assert cache.get("b") == "x" * 10  # b is now the most recent: d pushes c out
    cache.setdefault("d", "y" * 10)
    assert "c" not in cache and len(cache) == 2
    cache.setdefault("huge", "z" * 100)  # over the budget alone: kept (its request gets it), the rest dropped
    assert len(cache) == 1 and cache.get("huge")
    counted = BoundedCache(max_items=2, max_bytes=10**9, weigh=len)
    for key in "abc":
        counted.setdefault(key, key)
    assert len(counted) == 2 and "a" not in counted


def test_the_bench_plateau_row_compares_the_end_with_halfway() -> None:
    from kf_model.bench.workloads import plateau_row

    levelled = plateau_row([(n, 1000.0 + (50.0 if n >= 40 else n)) for n in range(10, 110, 10)], "a, b")
    assert levelled.ratio == pytest.approx(1050 / 1050) and levelled.passed is True and "100: 1050" in levelled.note
    growing = plateau_row([(n, 1000.0 + 5 * n) for n in range(10, 110, 10)], "a, b")
    assert growing.ratio == pytest.approx(1500 / 1250) and growing.passed is False


def test_a_banks_cached_networks_stay_under_their_byte_budget(tmp_path: Path) -> None:
    registry = BankRegistry(write_banks(tmp_path / "banks"), warmup=False)
    entry = registry.get("fashion-mnist")
    first = entry.network(["coat"])
    entry.networks.max_bytes = int(2.5 * entry.networks.bytes)  # room for two networks of one task
    for task in ("bag", "shirt", "sneaker"):
        entry.network([task])
    assert len(entry.networks) == 2 and entry.networks.bytes <= entry.networks.max_bytes
    assert entry.network(["coat"]) is not first  # dropped, then rebuilt


# ----------------------------------------------------------------------------- item 8: duplicate labels

def test_duplicate_labels_are_refused() -> None:
    with pytest.raises(InvalidConfigError, match="label\\(s\\) 'a' appear more than once"):
        TaskSpec("t", ("a", "a", "a"), "")


def test_a_manifest_with_duplicate_labels_is_refused(bank_dir: Path, tmp_path: Path) -> None:
    def twice(data):
        data["tasks"][0]["labels"] = ["a"] * len(data["tasks"][0]["labels"])
        return data

    with pytest.raises(InvalidConfigError, match="appear more than once"):
        FactorBank.from_pretrained(hostile_copy(bank_dir, tmp_path, twice))


# ----------------------------------------------------------------------------- item 6: hostile evaluation files

HOSTILE_MANIFESTS = [
    (lambda m: m["metrics"].update(tasks=[]), "'metrics.tasks' must be an object"),
    (lambda m: m["metrics"].update(tasks={"shape": "high"}), "metrics.tasks.shape must be an object"),
    (lambda m: m["metrics"].update(summary=[1, 2]), "'metrics.summary' must be an object"),
    (lambda m: m["training"].update(added_tasks=[]), "'training.added_tasks' must be an object"),
    (lambda m: m["training"].update(commands="rm -rf"), "'training.commands' must be a list"),
]
HOSTILE_RESULTS = [
    ({"parameters": {"num_tasks": 0, "ckn_params": 1, "bank_params": 1, "subset_students_params_paper": 1,
                     "tsn_params": [1]}}, "'parameters.num_tasks' must be a whole number of at least 1"),
    ({"parameters": {"num_tasks": "three"}}, "'parameters.num_tasks' must be a whole number"),
    ({"parameters": [1, 2]}, "'parameters' must be an object"),
    ({"added_tasks": {"x": "high"}}, "'added_tasks.x' must be an object"),
    ([1, 2, 3], "it must be a JSON object"),
    ("deep", "nested deeper than"),
]


def grown_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_results(folder: Path, results) -> None:
    (folder / "evaluation").mkdir(exist_ok=True)
    text = "[" * 100_000 + "]" * 100_000 if results == "deep" else json.dumps(results)
    (folder / "evaluation" / "results.json").write_text(text)


@pytest.mark.parametrize(("change", "message"), HOSTILE_MANIFESTS)
def test_add_task_refuses_a_hostile_manifest_before_training(tmp_path: Path, change, message: str) -> None:
    from kf_model.training import run
    from kf_model.training.add_task import AddTaskJob
    from tests.test_growing import common
    from tests.test_growing import make_bank as make_small_bank

    folder = make_small_bank().save_pretrained(tmp_path / "bank")
    manifest = json.loads((folder / "factors.json").read_text())
    change(manifest)
    (folder / "factors.json").write_text(json.dumps(manifest))
    before = grown_files(folder)
    with pytest.raises(InvalidConfigError, match=message):
        run(AddTaskJob, common(tmp_path / "run", str(folder)))
    assert not (tmp_path / "run" / "log.jsonl").exists()  # refused before training
    assert grown_files(folder) == before


@pytest.mark.parametrize(("results", "message"), HOSTILE_RESULTS)
def test_add_task_refuses_a_hostile_evaluation_before_training(tmp_path: Path, results, message: str) -> None:
    from kf_model.training import run
    from kf_model.training.add_task import AddTaskJob
    from tests.test_growing import common
    from tests.test_growing import make_bank as make_small_bank

    folder = make_small_bank().save_pretrained(tmp_path / "bank")
    write_results(folder, results)
    before = grown_files(folder)
    with pytest.raises(InvalidConfigError, match=message):
        run(AddTaskJob, common(tmp_path / "run", str(folder)))
    assert not (tmp_path / "run" / "log.jsonl").exists()
    assert grown_files(folder) == before


def test_a_grown_bank_is_written_all_or_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kf_model.bank import growing
    from kf_model.training.add_task import new_tsn
    from tests.test_growing import POS_X
    from tests.test_growing import make_bank as make_small_bank

    folder = make_small_bank().save_pretrained(tmp_path / "bank")
    before = grown_files(folder)
    bank = FactorBank.from_pretrained(folder)
    tsn = new_tsn(bank, POS_X)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(growing, "record_added_evaluation", disk_full)  # fails after the TSN and manifest are written
    with pytest.raises(OSError, match="No space left"):
        growing.grow_folder(folder, tsn, trained_with=bank.manifest.ckn_fingerprint, replace=False,
                            evaluation=None, provenance={})
    assert grown_files(folder) == before  # nothing of the new task
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bank"]  # no staging folder left
    monkeypatch.undo()
    growing.grow_folder(folder, tsn, trained_with=bank.manifest.ckn_fingerprint, replace=False, evaluation=None,
                        provenance={})
    assert [t.name for t in FactorBank.from_pretrained(folder).tasks][-1] == "pos_x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bank"]


@pytest.mark.parametrize(("results", "message"), HOSTILE_RESULTS)
def test_the_app_shows_a_bank_with_hostile_evaluation_files(tmp_path: Path, results, message: str) -> None:
    """The bank-change handler used to fail (ZeroDivisionError...), so that the bank could not be picked."""
    from kf_model import serving

    banks = write_banks(tmp_path / "banks")
    write_results(banks / "dsprites", results)
    manifest = json.loads((banks / "dsprites" / "factors.json").read_text())
    manifest["metrics"]["tasks"] = [1, 2]
    (banks / "dsprites" / "factors.json").write_text(json.dumps(manifest))
    entry = BankRegistry(banks, warmup=False).get("dsprites")
    explained = serving.explain_markdown(entry, ["shape"])
    assert "No evaluation is recorded" in explained["metrics"]
    assert "The whole bank" not in explained["parameters"]  # the hostile table is left out, the rest is shown
    assert serving.summary_markdown(entry, ["shape"])
    assert BankRegistry(banks, warmup=False).export_zip("dsprites", ["shape"], tmp_path / "zip").is_file()  # card


# ----------------------------------------------------------------------------- item 4: huge images in training data

GREY = {"channels": 1, "size": 28, "mean": [0.5], "std": [0.5]}


def image_tree(root: Path, per_class: int = 4) -> Path:
    from PIL import Image

    for label in ("a", "b"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("L", (28, 28), 40 * i + (label == "b") * 100).save(root / label / f"{i}.png")
    return root


def test_a_huge_image_in_the_training_data_is_refused_by_name(tmp_path: Path) -> None:
    """A 12000x12000 PNG (a few KB) used to train, at 2.1 GB peak; the scan stopped only at Pillow's 178 MP."""
    from PIL import Image

    from kf_model.data import open_dataset
    from kf_model.errors import InvalidDataError

    root = image_tree(tmp_path / "data")
    Image.new("1", (12_000, 12_000)).save(root / "a" / "huge.png")
    assert (root / "a" / "huge.png").stat().st_size < 200_000
    with pytest.raises(InvalidDataError, match=r"a/huge\.png: it is .*the limit is \d+ megapixels"):
        open_dataset(str(root), "train", input_spec=GREY, val_fraction=0, test_fraction=0)
    skipped = open_dataset(str(root), "train", input_spec=GREY, val_fraction=0, test_fraction=0,
                           skip_bad_images=True)
    assert len(skipped) == 8 and skipped.split_info["skipped_files"] == ["a/huge.png"]
    (root / "a" / "huge.png").unlink()
    Image.new("1", (6_500, 6_500)).save(root / "a" / "large.png")  # 42 MP: over the limit, under Pillow's
    with pytest.raises(InvalidDataError, match=r"a/large\.png: it is 6500x6500 pixels \(42 megapixels\); the "
                                               r"limit is 40 megapixels \(max_image_pixels, --max-image-pixels\)"):
        open_dataset(str(root), "train", input_spec=GREY, val_fraction=0, test_fraction=0)
    allowed = open_dataset(str(root), "train", input_spec=GREY, val_fraction=0, test_fraction=0,
                           max_image_pixels=50_000_000)  # a documented, explicit choice
    assert len(allowed) == 9


# ----------------------------------------------------------------------------- item 9: --skip-bad-images is said

def test_skipped_images_are_printed_and_recorded_in_training_json(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    from kf_model.training import TeacherJob, run

    root = image_tree(tmp_path / "data", per_class=6)
    for i in range(20):
        (root / "b" / f"broken-{i}.png").write_bytes(b"not a png")
    out = tmp_path / "run"
    run(TeacherJob, ["--data-dir", str(root), "--skip-bad-images", "--batch-size", "4", "--max-steps", "1",
                     "--warmup-steps", "1", "--cpu", "--output-dir", str(out), "--arch", "cnn", "--width", "4",
                     "--num-stages", "3", "--image-size", "28"])
    printed = capsys.readouterr().out
    recorded = json.loads((out / "training.json").read_text())["skipped_images"]
    count = recorded["count"]  # the train split's share of the 20 (val and test are carved out, seeded)
    assert count > 5 and len(recorded["files"]) == count and all(f.startswith("b/broken-") for f in recorded["files"])
    assert (f"skipped {count} bad images of the train split (--skip-bad-images): {recorded['files'][0]}, "
            in printed) and f"and {count - 5} more" in printed


# ----------------------------------------------------------------------------- item 7: kf errors, not tracebacks

def test_a_teacher_repo_id_that_is_a_path_is_a_kf_error() -> None:
    from kf_model.errors import BankNotFoundError
    from kf_model.teachers import source_input_spec

    with pytest.raises(BankNotFoundError, match=r"'\.\./\.\./x' is not a valid Hub repo id"):
        source_input_spec("hf-hub:../../x")


@pytest.mark.parametrize(("name", "content", "message"), [
    ("metadata.csv", "file_name,label\na/0.png,caf\xe9\n".encode("latin-1"), "not UTF-8 text"),
    ("metadata.csv", ("file_name,label\na/0.png," + "x" * 140_000 + "\n").encode(), "field larger than field limit"),
    ("metadata.jsonl", ('{"file_name": "a/0.png", "label": ' + "[" * 100_000 + "]" * 100_000 + "}\n").encode(),
     "nested too deeply"),
])
def test_hostile_metadata_files_are_kf_errors(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    from kf_model.data import open_dataset
    from kf_model.errors import InvalidDataError

    root = image_tree(tmp_path / "data")
    (root / name).write_bytes(content)
    with pytest.raises(InvalidDataError, match=f"{name}: .*{message}"):
        open_dataset(str(root), "train", input_spec=GREY)


def test_an_unusable_output_dir_is_refused_before_any_data_is_read(tmp_path: Path) -> None:
    from kf_model.errors import UnwritablePathError
    from kf_model.training import TeacherJob, run

    with pytest.raises(UnwritablePathError, match="--output-dir /proc/kf: cannot create it"):
        run(TeacherJob, ["--data-dir", str(tmp_path / "no-data"), "--output-dir", "/proc/kf", "--cpu"])
    run_dir = tmp_path / "new" / "run"  # a usable one is checked, and not left behind by a refused run
    with pytest.raises(KFError):
        run(TeacherJob, ["--data-dir", str(tmp_path / "no-data"), "--output-dir", str(run_dir), "--cpu"])
    assert not (tmp_path / "new").exists()
