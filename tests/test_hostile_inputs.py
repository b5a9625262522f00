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


def test_a_run_refuses_an_output_dir_it_would_write_over_before_any_data_is_read(tmp_path: Path) -> None:
    """Someone's folder, the teacher's or the data's: a run writes README.md, training.json, log.jsonl and weights
    there, and once replaced them. An earlier run's folder (and an empty one) stays usable."""
    from kf_model.training import FactorizeJob, TeacherJob, run

    mine, teacher = tmp_path / "mine", tmp_path / "teacher"
    for folder, name in ((mine, "README.md"), (teacher, "model.safetensors")):
        folder.mkdir()
        (folder / name).write_text("keep me")
    with pytest.raises(KFError, match=r"holds README\.md and no earlier run"):
        run(TeacherJob, ["--data-dir", str(tmp_path / "no-data"), "--output-dir", str(mine), "--cpu"])
    with pytest.raises(KFError, match="is the --teacher folder"):
        run(FactorizeJob, ["--data-dir", str(tmp_path / "no-data"), "--teacher", str(teacher), "--output-dir",
                           str(teacher), "--cpu"])
    with pytest.raises(KFError, match="is the --data-dir folder"):
        run(TeacherJob, ["--data-dir", str(mine), "--output-dir", str(mine), "--cpu"])
    assert (mine / "README.md").read_text() == "keep me" and (teacher / "model.safetensors").read_text() == "keep me"
    (mine / "log.jsonl").write_text("")  # an earlier run's folder: past the check (then no data here)
    with pytest.raises(KFError, match="no-data"):
        run(TeacherJob, ["--data-dir", str(tmp_path / "no-data"), "--output-dir", str(mine), "--cpu"])


def test_a_push_to_hub_that_is_not_a_repo_id_is_refused_before_training(tmp_path: Path) -> None:
    from kf_model.training import FactorizeJob, run

    with pytest.raises(KFError, match=r"--push-to-hub '../../etc' is not a Hub repo id"):
        run(FactorizeJob, ["--data-dir", str(tmp_path / "no-data"), "--teacher", "timm:resnet18", "--output-dir",
                           str(tmp_path / "out"), "--push-to-hub", "../../etc", "--cpu"])
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- command lines: refused up front

@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    """A plain file where a command expects a folder (or the parent of its output)."""
    path = tmp_path / "afile"
    path.write_text("not a folder\n")
    return path


def exit_message(main, argv: list[str]) -> str:
    """The ``error: ...`` a command's ``main(argv)`` exits with (SystemExit's message, not a traceback)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert str(exit_info.value.code).startswith("error: ")
    return str(exit_info.value.code)


def test_a_malformed_wordnet_file_is_a_kf_error(tmp_path: Path) -> None:
    """Garbage raised IndexError deep in the parser; an empty file blamed the missing 'dog' synset."""
    from kf_model.teachers.wordnet import read_hypernyms

    (tmp_path / "garbage.noun").write_bytes(b"\x00\xfb garbage\nmore of it\n")
    (tmp_path / "empty.noun").write_bytes(b"")
    with pytest.raises(InvalidConfigError, match=r"not a WordNet data\.noun file: line 1"):
        read_hypernyms(tmp_path / "garbage.noun")
    with pytest.raises(InvalidConfigError, match=r"not a WordNet data\.noun file: it holds no synset"):
        read_hypernyms(tmp_path / "empty.noun")


def test_teacher_commands_check_their_options_before_any_work(tmp_path: Path, a_file: Path) -> None:
    """task-map's --out and --check, convert's --out and --check-class: refused before WordNet or the network."""
    from kf_model.teachers.__main__ import main

    assert "a folder, not a file name" in exit_message(main, ["task-map", "--out", str(tmp_path)])
    assert "is a file, not a folder" in exit_message(main, ["task-map", "--out", str(a_file / "x.json")])
    check = exit_message(main, ["task-map", "--out", str(tmp_path / "t.json"), "--check", str(a_file)])
    assert check.startswith(f"error: --check {a_file}: not JSON")
    convert = ["convert", str(tmp_path / "missing.pth"), "--arch", "efficientnet_lite0", "--mean", "0", "0", "0",
               "--std", "1", "1", "1"]
    for out in (a_file, a_file / "x"):
        assert "is a file, not a folder" in exit_message(main, [*convert, "--out", str(out)])
    too_big = [*convert, "--out", str(tmp_path / "t"), "--num-classes", "10", "--check-class", "99",
               "--check-image", str(a_file)]
    assert "--check-class must be in [0, 9]" in exit_message(main, too_big)


@pytest.mark.parametrize(("argv", "message"), [
    (["export", "fashion-mnist", "--out", "{afile}/sub", "--limit", "8"], "is a file, not a folder"),
    (["export", "fashion-mnist", "--out", "{tmp}/e", "--limit", "0"], "--limit must be a positive"),
    (["preview", "fashion-mnist", "--out", "{afile}/x.png"], "is a file, not a folder"),
    (["preview", "fashion-mnist", "--out", "{tmp}/p.txt"], "must end in one of .png"),
    (["preview", "fashion-mnist", "--out", "{tmp}"], "a folder, not a file name"),
    (["preview", "fashion-mnist", "--out", "{tmp}/p.png", "--n", "-1"], "--n must be between 1 and"),
    (["photos", "--out", "{tmp}/photos", "--max-side", "-1"], "--max-side must be between 16 and"),
    (["photos", "--out", "{afile}"], "is a file, not a folder"),
])
def test_data_commands_refuse_bad_options_before_reading_data(tmp_path: Path, a_file: Path, capsys, argv: list[str],
                                                              message: str) -> None:
    """Each failed with a traceback (NotADirectoryError, FileExistsError, matplotlib, PIL) or wrote another file."""
    from kf_model.data.__main__ import main

    assert main([a.format(afile=a_file, tmp=tmp_path) for a in argv]) == 1
    assert message in capsys.readouterr().err
    assert sorted(tmp_path.iterdir()) == [a_file]  # nothing written


@pytest.mark.parametrize(("argv", "message"), [
    (["report", "--output", "{tmp}/nowhere"], "no experiment results there"),
    (["report", "--output", "{afile}"], "no experiment results there"),
    (["report", "--output", "{results}", "--readme", "{tmp}"], "--readme {tmp}: a folder"),
    (["probe", "--assemble-only", "--output", "{tmp}"], "no cost-probe-full.json to reprice"),
    (["transfer", "--scale", "full", "--assemble-only", "--output", "{afile}"], "is a file, not a folder"),
    (["sweep", "--scale", "full", "--betas", "-1", "--output", "{tmp}/x"], "--betas must be finite and >= 0"),
    (["sweep", "--scale", "full", "--betas", "7", "--output", "{tmp}/x"], "--betas 7.0: not swept at --scale"),
])
def test_experiment_commands_refuse_bad_options_first(tmp_path: Path, a_file: Path, argv: list[str],
                                                      message: str) -> None:
    """FileNotFoundError, IsADirectoryError or FileExistsError before; --betas 7 quietly selected no run."""
    from kf_model.experiments.cli import main

    results = tmp_path / "results"
    results.mkdir()
    (results / "transfer-dsprites-quick.json").write_text("{}")
    names = {"tmp": tmp_path, "afile": a_file, "results": results}
    assert message.format(**names) in exit_message(main, [a.format(**names) for a in argv])


def test_photo_evaluation_names_a_file_that_is_no_image(tmp_path: Path) -> None:
    """PIL's UnidentifiedImageError before; and --card without the evaluation's JSON raised FileNotFoundError."""
    from kf_model.evaluation.photos import main

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_text("not an image")
    argv = ["--teacher", str(tmp_path), "--task-map", str(tmp_path / "map.json"), "--bank", str(tmp_path),
            "--photos", str(photos)]
    assert f"{photos / 'a.jpg'}: cannot read it as an image" in exit_message(main, [*argv, "--out", str(tmp_path)])
    missing = tmp_path / "missing"
    assert "no photo_bank.json there" in exit_message(main, [*argv, "--out", str(missing), "--card"])


def test_photo_examples_need_an_existing_evaluation(tmp_path: Path) -> None:
    from kf_model.serving.photo_examples import main

    argv = ["--evaluation", str(tmp_path / "missing.json"), "--photos", str(tmp_path), "--bank", str(tmp_path),
            "--out", str(tmp_path / "out")]
    assert "--evaluation" in exit_message(main, argv) and not (tmp_path / "out").exists()


def test_space_stage_refuses_a_file(a_file: Path, capsys) -> None:
    from kf_model import space

    with pytest.raises(SystemExit) as exit_info:
        space._main(["stage", str(a_file)])
    assert exit_info.value.code == 2 and "is a file, not a folder" in capsys.readouterr().err


def test_the_evaluate_script_checks_its_options_before_evaluating(tmp_path: Path, a_file: Path, capsys) -> None:
    """--batch-size 0 reached torch; an --output-dir that is a file failed after the whole evaluation."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("kf_evaluate_script", Path(__file__).parents[1] / "train" /
                                                  "evaluate.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    argv = ["--teacher", str(tmp_path / "teacher"), "--bank", str(tmp_path / "bank"), "--dataset", "dsprites",
            "--cpu"]
    for option, value in (("--batch-size", "0"), ("--limit", "0"), ("--probe-samples", "-1"), ("--seed", "-1")):
        with pytest.raises(SystemExit):
            script.main([*argv, option, value])
        assert f"{option} must be" in capsys.readouterr().err
    assert script.main([*argv, "--output-dir", str(a_file)]) == 2
    assert f"--output-dir {a_file}: {a_file} is a file, not a folder" in capsys.readouterr().err


# ----------------------------------------------------------------------------- preprocessing: image_to_tensor

def test_a_very_wide_image_is_reduced_before_it_is_padded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 20000x2 image was padded to a 20000x20000 float square (4.6 GB, 7 s) before resizing."""
    import torch
    from PIL import Image

    from kf_model.data.preprocess import SHRINK_ABOVE, image_to_tensor
    from kf_model.data.specs import InputSpec

    spec = InputSpec(3, 16, (0.5,) * 3, (0.5,) * 3)
    sides: list[int] = []
    interpolate = torch.nn.functional.interpolate
    monkeypatch.setattr(torch.nn.functional, "interpolate",
                        lambda x, **kwargs: sides.append(x.shape[-1]) or interpolate(x, **kwargs))
    x = image_to_tensor(Image.new("RGB", (3000, 2), (200, 100, 50)), spec)
    assert x.shape == (1, 3, 16, 16) and bool(torch.isfinite(x).all())
    assert sides and max(sides) <= SHRINK_ABOVE * 16


def test_an_image_at_the_input_size_is_unchanged_and_bad_images_are_refused_in_words() -> None:
    import numpy as np
    import torch
    from PIL import Image

    from kf_model.data.preprocess import image_to_tensor
    from kf_model.data.specs import InputSpec
    from kf_model.errors import InvalidArgumentError, InvalidImageError

    spec = InputSpec(1, 16, (0.5,), (0.5,))
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16), dtype=np.uint8)
    x = image_to_tensor(Image.fromarray(pixels), spec)
    assert torch.equal(x, torch.from_numpy(pixels.astype(np.float32) / 255.0)[None, None])
    nan = np.full((16, 16), np.nan, dtype=np.float32)
    with pytest.raises(InvalidImageError, match="NaN or infinite pixels"):
        image_to_tensor(Image.fromarray(nan), spec)
    for thing, hint in [(torch.zeros(1, 16, 16), "tensor or array"), (pixels, "tensor or array"),
                        ("photo.png", "open_image"), (None, "NoneType")]:
        with pytest.raises(InvalidImageError, match=rf"expected a PIL image, got .*{hint}"):
            image_to_tensor(thing, spec)
    with pytest.raises(InvalidImageError, match=r"no pixels \(0x0\)"):
        image_to_tensor(Image.new("L", (0, 0)), spec)
    with pytest.raises(InvalidImageError, match=r"the limit is 0\.0001 megapixels"):
        image_to_tensor(Image.new("L", (20, 20)), spec, max_pixels=100)
    with pytest.raises(InvalidArgumentError, match="invert must be True, False or None"):
        image_to_tensor(Image.fromarray(pixels), spec, invert="no")


# ----------------------------------------------------------------------------- int8 calibration images

def test_calibration_images_must_be_finite_floats_in_the_unit_range() -> None:
    """uint8 pixels gave an int8 model that answered zeros; NaN a bare onnxruntime ``AssertionError``."""
    import torch

    from kf_model.errors import InvalidArgumentError
    from kf_model.export.quantize import check_quantize

    good = torch.rand(4, 1, 8, 8)
    assert check_quantize("int8", good) == "int8"
    for images, message in [((good * 255).to(torch.uint8), r"float32 in \[0, 1\].*got torch.uint8"),
                            (good * 255, r"in \[0, 1\].*divide by 255"), (good - 0.5, r"in \[0, 1\]"),
                            (torch.full_like(good, float("nan")), "NaN or infinite")]:
        with pytest.raises(InvalidArgumentError, match=message):
            check_quantize("int8", images)


# ----------------------------------------------------------------------------- growing a bank from Python

def test_train_new_task_refuses_bad_arguments_by_their_python_names() -> None:
    from kf_model.errors import InvalidArgumentError
    from kf_model.training.add_task import train_new_task
    from tests.test_growing import POS_X, make_bank

    bank = make_bank()
    for kwargs, message in [({"spec": None}, "spec must be a TaskSpec"), ({"spec": "pos_x"}, "must be a TaskSpec"),
                            ({"spec": POS_X.to_dict()}, r"TaskSpec\.from_dict"), ({"bank": None}, "bank must be"),
                            ({"steps": "3"}, "steps must be an integer"), ({"steps": 2.5}, "steps must be an integer"),
                            ({"batch_size": 8.0}, "batch_size must be"), ({"lr": "x"}, "lr must be a finite")]:
        arguments = {"bank": bank, "spec": POS_X, "steps": 1, "batch_size": 8, **kwargs}
        with pytest.raises(InvalidArgumentError, match=message):
            train_new_task(arguments.pop("bank"), arguments.pop("spec"), [], **arguments)


@pytest.mark.parametrize("label", [5, -1])
def test_labels_outside_the_new_tasks_classes_are_refused(label: int) -> None:
    import torch

    from kf_model.data import TaskSpec
    from kf_model.errors import InvalidDataError
    from kf_model.training.add_task import train_new_task
    from tests.test_growing import make_bank

    spec = TaskSpec("three", ["a", "b", "c"], "three classes")
    data = torch.utils.data.TensorDataset(torch.rand(8, 1, 64, 64), torch.tensor([0, 1, 2, label, 0, 1, 2, 0]))
    with pytest.raises(InvalidDataError, match=f"item 3 has label {label}; task 'three' has 3 classes"):
        train_new_task(make_bank(), spec, data, steps=1, batch_size=8)


def test_a_new_factor_whose_training_diverged_is_refused() -> None:
    from kf_model.errors import KFError
    from kf_model.training.add_task import train_new_task
    from tests.test_growing import POS_X, make_bank, pos_x_data

    with pytest.raises(KFError, match="training diverged"):
        train_new_task(make_bank(), POS_X, pos_x_data(16), steps=3, batch_size=8, lr=1e30)


# ----------------------------------------------------------------------------- load_dataset

@pytest.mark.parametrize("limit", ["5", 2.5, True, 0])
def test_load_dataset_refuses_a_limit_that_is_not_a_whole_number(limit) -> None:
    from kf_model.data import load_dataset
    from kf_model.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match=r"limit must be None .* or a whole number of items"):
        load_dataset("dsprites", "train", limit=limit)
