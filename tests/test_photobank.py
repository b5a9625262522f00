"""Issue 21 on tiny timm models (no download): converting a trusted .pth, task maps (and their WordNet
derivation), label-free factorization of unlabelled images under heavy augmentation, frozen CKN stages, and the
photo evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from kf_model import FactorBank
from kf_model.data import TaskSpec
from kf_model.data.augment import AugmentConfig, augmented_view, crop_box
from kf_model.data.unlabelled import UnlabelledImages, is_unlabelled_folder
from kf_model.errors import CorruptWeightsError, InvalidConfigError, KFError
from kf_model.losses import IMBConfig, IMBObjective
from kf_model.models.freezing import freeze_early_stages
from kf_model.teachers import TeacherFolderConfig, create_task_map_teacher
from kf_model.teachers.convert import ClassCheck, ClassCheckError, convert_checkpoint, map_state_dict
from kf_model.teachers.task_maps import TaskMap, group_log_probabilities, task_logits
from kf_model.teachers.weights import WeightsMismatchError
from kf_model.teachers.wordnet import GroupRule, derive_groups, read_hypernyms
from kf_model.training import FactorizeJob, TeacherJob, run

ARCH = "test_efficientnet"
STEPS = ["--batch-size", "4", "--max-steps", "3", "--warmup-steps", "1", "--log-every", "1", "--cpu",
         "--num-threads", "1"]


def task_map(classes: int = 10) -> TaskMap:
    return TaskMap.from_dict({"format": "kf-task-map/1", "teacher_classes": classes, "tasks": [
        {"name": "low", "description": "classes 0-2", "classes": [0, 1, 2]},
        {"name": "high", "classes": [7, 8, 9]},
        {"name": "which", "groups": {"a": [3, 4], "b": [5]}}]})


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """A user's trusted plain state dict, keys renamed (as another library names them): maps only by order."""
    torch.manual_seed(0)
    model = timm.create_model(ARCH, pretrained=False, num_classes=10).eval()
    path = tmp_path_factory.mktemp("ckpt") / "model.pth"
    torch.save({f"_other.{i}": v.clone() for i, v in enumerate(model.state_dict().values())}, path)
    return path, model


@pytest.fixture(scope="module")
def teacher_folder(tmp_path_factory: pytest.TempPathFactory, checkpoint) -> Path:
    out = tmp_path_factory.mktemp("teacher") / "teacher"
    convert_checkpoint(checkpoint[0], ARCH, out, mean=(0.5,) * 3, std=(0.5,) * 3, image_size=32, num_classes=10)
    return out


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of loose images, no labels."""
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (40 + 8 * i, 56, 3), dtype=np.uint8)).save(folder / f"p{i}.jpg")
    return folder


# ------------------------------------------------------------------ conversion


def test_convert_maps_by_order_and_keeps_the_function(teacher_folder: Path, checkpoint) -> None:
    _, model = checkpoint
    config = TeacherFolderConfig.read(teacher_folder)
    assert config.architecture == ARCH and config.extra["mapping"] == "order"
    assert list(config.input_spec.mean) == [0.5] * 3 and len(config.extra["sha256"]) == 64
    teacher = create_task_map_teacher(str(teacher_folder), task_map())
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = model((x - 0.5) / 0.5)
        torch.testing.assert_close(teacher(x).class_logits, expected)


def test_convert_by_name_and_shape_checks() -> None:
    target = {"a": torch.zeros(2, 3), "b": torch.zeros(4)}
    mapped, used = map_state_dict({"b": torch.ones(4), "a": torch.ones(2, 3)}, target)
    assert used == "name" and list(mapped) == ["a", "b"]
    with pytest.raises(WeightsMismatchError, match="differ in shape"):
        map_state_dict({"x": torch.ones(3, 2), "y": torch.ones(4)}, target)
    with pytest.raises(WeightsMismatchError, match="3 tensors"):
        map_state_dict({"x": torch.ones(2, 3), "y": torch.ones(4), "z": torch.ones(1)}, target)


def test_convert_checks_the_class_of_a_known_image(tmp_path: Path, checkpoint) -> None:
    path, model = checkpoint
    image = tmp_path / "known.png"
    Image.fromarray(np.full((40, 40, 3), 120, dtype=np.uint8)).save(image)
    with torch.no_grad():
        pixels = torch.full((1, 3, 32, 32), 120 / 255)
        answer = int(model((pixels - 0.5) / 0.5).argmax())
    config = convert_checkpoint(path, ARCH, tmp_path / "ok", mean=(0.5,) * 3, std=(0.5,) * 3, image_size=32,
                                num_classes=10, check=ClassCheck(image, answer))
    assert config.extra["class_check"]["expected_class"] == answer
    with pytest.raises(ClassCheckError, match="--mean/--std"):
        convert_checkpoint(path, ARCH, tmp_path / "bad", mean=(0.5,) * 3, std=(0.5,) * 3, image_size=32,
                           num_classes=10, check=ClassCheck(image, (answer + 1) % 10))


def test_convert_refuses_what_is_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(CorruptWeightsError, match="not a state dict"):
        convert_checkpoint(path, ARCH, tmp_path / "out", mean=(0.5,) * 3, std=(0.5,) * 3)
    with pytest.raises(CorruptWeightsError, match="does not exist"):
        convert_checkpoint(tmp_path / "missing.pth", ARCH, tmp_path / "out", mean=(0.5,) * 3, std=(0.5,) * 3)
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "noise.pth").write_bytes(bytes(range(256)) * 8)

    class Code:  # a pickle that would run code when loaded without weights_only
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"w": Code()}, tmp_path / "code.pth")
    for name, message in (("empty.pth", "is empty"), ("noise.pth", "not a torch checkpoint"), (".", "is a folder"),
                          ("code.pth", "kf never runs a checkpoint's code")):
        with pytest.raises(CorruptWeightsError, match=message) as refused:
            convert_checkpoint(tmp_path / name, ARCH, tmp_path / "out", mean=(0.5,) * 3, std=(0.5,) * 3)
        assert "weights_only` set to `False`" not in str(refused.value)  # torch's advice kf never takes


# ------------------------------------------------------------------ task maps


def test_group_probabilities_are_sums_of_the_softmax() -> None:
    logits = torch.tensor([[1.0, 2.0, 0.5, -1.0, 3.0]])
    p = logits.softmax(dim=1)[0]
    log_groups = group_log_probabilities(logits, [(0, 1), (4,)], add_rest=True)
    torch.testing.assert_close(log_groups.exp()[0], torch.stack([p[0] + p[1], p[4], p[2] + p[3]]))
    mapped = task_map(5 + 5)
    one_vs_rest = task_logits(torch.cat([logits, logits], dim=1), mapped.tasks[0], 10).softmax(dim=1)
    q = torch.cat([logits, logits], dim=1).softmax(dim=1)[0]
    torch.testing.assert_close(one_vs_rest[0], torch.stack([1 - q[:3].sum(), q[:3].sum()]))
    assert mapped.task_specs()[2].labels == ("a", "b", "rest")


@pytest.mark.parametrize(("tasks", "message"), [
    ([{"name": "x", "classes": [0, 10]}], "indices in"),
    ([{"name": "x", "groups": {"a": [0, 1], "b": [1]}}], "overlap"),
    ([{"name": "Bad Name", "classes": [0]}], "task 0"),
    ([{"name": "x", "classes": [0]}, {"name": "x", "classes": [1]}], "repeat"),
    ([{"name": "x", "classes": list(range(10))}], "always"),
    ([{"name": "x"}], "either"),
])
def test_task_map_refusals(tasks: list, message: str) -> None:
    with pytest.raises(InvalidConfigError, match=message):
        TaskMap.from_dict({"format": "kf-task-map/1", "teacher_classes": 10, "tasks": tasks})


def test_task_map_round_trip(tmp_path: Path) -> None:
    mapped = task_map()
    mapped.write(tmp_path / "map.json")
    assert TaskMap.read(tmp_path / "map.json") == mapped
    with pytest.raises(InvalidConfigError, match="no such file"):
        TaskMap.read(tmp_path / "missing.json")


def test_wordnet_groups_follow_hypernyms(tmp_path: Path) -> None:
    """A four-synset WordNet: animal <- dog <- puppy (instance), animal <- cat; groups by hypernym closure."""
    lines = ["  1 licence header",
             "00000001 05 n 01 animal 0 000 | a living thing",
             "00000002 05 n 01 dog 0 001 @ 00000001 n 0000 | a dog",
             "00000003 05 n 01 puppy 0 001 @i 00000002 n 0000 | a young dog",
             "00000004 05 n 01 cat 0 001 @ 00000001 n 0000 | a cat"]
    (tmp_path / "data.noun").write_text("\n".join(lines) + "\n")
    parents, lemmas = read_hypernyms(tmp_path / "data.noun")
    rules = [GroupRule("dog", "", (("00000002", "dog"),)),
             GroupRule("animal", "", (("00000001", "animal"),), exclude=("dog",))]
    groups = derive_groups(["n00000003", "n00000004", "n00000002"], rules, parents, lemmas)
    assert groups == {"dog": (0, 2), "animal": (1,)}
    with pytest.raises(InvalidConfigError, match="not 'cat'"):
        derive_groups(["n00000003"], [GroupRule("x", "", (("00000002", "cat"),))], parents, lemmas)


def test_committed_everyday_map_is_well_formed() -> None:
    mapped = TaskMap.read(Path(__file__).resolve().parents[1] / "train" / "configs" / "photo_everyday_tasks.json")
    assert mapped.teacher_classes == 1000 and 12 <= len(mapped.tasks) <= 16
    assert {"dog", "cat", "bird", "vehicle", "food", "clothing"} <= {t.name for t in mapped.tasks}
    assert "task-map" in mapped.derived_by


# ------------------------------------------------------------------ unlabelled data, augmentation, objective


def test_augmented_views_are_seeded_and_in_range(photos: Path) -> None:
    images = [Image.open(p).convert("RGB") for p in sorted(photos.glob("*.jpg"))]
    config = AugmentConfig(mix=0.5)
    a = augmented_view(images, 1, 24, np.random.default_rng([0, 7]), config)
    b = augmented_view(images, 1, 24, np.random.default_rng([0, 7]), config)
    assert a.shape == (3, 24, 24) and torch.equal(a, b) and 0 <= float(a.min()) <= float(a.max()) <= 1
    rng = np.random.default_rng(0)
    for _ in range(200):
        left, top, right, bottom = crop_box(50, 30, rng, config)
        assert 0 <= left < right <= 50 and 0 <= top < bottom <= 30


def test_unlabelled_folder(photos: Path, teacher_folder: Path) -> None:
    assert is_unlabelled_folder(photos) and not is_unlabelled_folder(photos.parent)
    spec = TeacherFolderConfig.read(teacher_folder).input_spec
    data = UnlabelledImages(photos, spec, views_per_image=3, augment=AugmentConfig())
    assert len(data) == 15 and data[7][0].shape == (3, 32, 32) and data[7][1].shape == (0,)
    assert torch.equal(data[7][0], data[7][0]) and not torch.equal(data[2][0], data[7][0])


def test_objective_without_labels_is_kd_and_infomax() -> None:
    torch.manual_seed(0)
    objective = IMBObjective([8], [8], IMBConfig())
    logits = {"t": torch.randn(4, 2, requires_grad=True)}
    total, terms = objective(logits=logits, aux_logits={"t": torch.randn(4, 2)}, targets=None,
                             teacher_logits={"t": torch.randn(4, 2)}, ckn_features=[torch.randn(4, 8)],
                             teacher_features=[torch.randn(4, 8)], task_features=torch.randn(4, 1, 8))
    assert float(terms["ce"]) == 0 and "aux_kd" in terms and "aux_ce" not in terms
    total.backward()
    assert logits["t"].grad is not None


def test_frozen_stages_keep_eval_mode_and_weights() -> None:
    model = timm.create_model(ARCH, num_classes=0)
    names = freeze_early_stages(model, 2)
    assert names[-1] == "blocks.1" and "blocks.2" not in names
    model.train()
    assert not model.blocks[1].training and model.blocks[2].training
    assert not any(p.requires_grad for p in model.blocks[0].parameters())
    with pytest.raises(KFError, match="freeze-ckn-stages"):
        freeze_early_stages(model, 9)


# ------------------------------------------------------------------ label-free factorization end to end


def test_label_free_factorization_of_a_task_map(tmp_path: Path, teacher_folder: Path, photos: Path) -> None:
    task_map().write(tmp_path / "map.json")
    out = tmp_path / "bank"
    run(FactorizeJob, ["--teacher", str(teacher_folder), "--task-map", str(tmp_path / "map.json"), "--data-dir",
                       str(photos), "--augment", "heavy", "--views-per-image", "4", "--ckn-arch", f"timm:{ARCH}",
                       "--init-ckn-from-teacher", "--freeze-ckn-stages", "2", "--tsn-widths", "4", "--tsn-strides",
                       "4", "--output-dir", str(out), *STEPS])
    bank = FactorBank.from_pretrained(out)
    assert [t.name for t in bank.tasks] == ["low", "high", "which"] and bank.tasks[2].num_classes == 3
    training = json.loads((out / "training.json").read_text())
    assert "aux_kd" in training["final_train_terms"] and training["final_train_terms"]["ce"] == 0
    assert bank.manifest.teacher["task_map"]["teacher_classes"] == 10
    with torch.no_grad():
        x = torch.rand(2, 3, 32, 32)
        full = bank.assemble()(x)
        torch.testing.assert_close(bank.factor("which")(x), full["which"], rtol=0, atol=1e-5)


def test_a_task_map_ignores_the_labels_of_a_labelled_folder(tmp_path: Path, teacher_folder: Path) -> None:
    """The map's questions replace the data's labels (as --task-map's help says): a class-folder tree factorizes
    without them (it stopped after the first batch with "targets must be [B, 3]"), and --val-size, which would
    score the map's tasks against the folder's classes, is refused before training."""
    for label in ("cat", "dog"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (36, 36), (60 * i, 90, 30)).save(tmp_path / "data" / label / f"{i}.png")
    task_map().write(tmp_path / "map.json")
    argv = ["--teacher", str(teacher_folder), "--task-map", str(tmp_path / "map.json"), "--data-dir",
            str(tmp_path / "data"), "--tsn-widths", "4", "--tsn-strides", "4", *STEPS]
    run(FactorizeJob, [*argv, "--output-dir", str(tmp_path / "bank")])
    assert [t.name for t in FactorBank.from_pretrained(tmp_path / "bank").tasks] == ["low", "high", "which"]
    with pytest.raises(KFError, match="--val-size with --task-map"):
        run(FactorizeJob, [*argv, "--val-size", "2", "--output-dir", str(tmp_path / "refused")])
    assert not (tmp_path / "refused" / "log.jsonl").exists()


def test_a_task_map_for_another_teacher_is_refused_in_its_words(teacher_folder: Path) -> None:
    from kf_model.teachers import create_task_map_teacher

    with pytest.raises(KFError, match=r"groups the classes of a 1000-way teacher .* predicts 10 classes"):
        create_task_map_teacher(str(teacher_folder), task_map(1000))


def test_unlabelled_images_need_a_factorization(tmp_path: Path, photos: Path) -> None:
    with pytest.raises(KFError, match="no labels"):
        run(TeacherJob, ["--data-dir", str(photos), "--output-dir", str(tmp_path / "t"), *STEPS])


# ------------------------------------------------------------------ multi-attribute timm teachers (issue 21 item 4)


def test_a_timm_teacher_of_several_labels_gets_one_head_each_and_the_data_size(tmp_path: Path) -> None:
    """--from timm:test_resnet --finetune (no weights) on a metadata.csv of two attributes: one head per column,
    and the data's own 64-px grey input rather than the architecture's 160-px RGB default."""
    from kf_model.data.export import export_dataset

    data = tmp_path / "sprites"
    export_dataset("dsprites", data, format="csv", limit=64)
    common = ["--data-dir", str(data), "--label-columns", "shape", "scale", *STEPS]
    run(TeacherJob, ["--from", "timm:test_resnet", "--finetune", "--output-dir", str(tmp_path / "teacher"), *common])
    config = TeacherFolderConfig.read(tmp_path / "teacher")
    assert config.input_spec.size == 64 and config.input_spec.channels == 1
    assert config.num_classes == 3 + 6 and config.label_names[2].startswith("shape=")
    assert config.label_names[3].startswith("scale=")
    run(FactorizeJob, ["--teacher", str(tmp_path / "teacher"), "--ckn-width", "4", "--ckn-num-stages", "3",
                       "--ckn-stem-stride", "2", "--tsn-widths", "4", "--tsn-strides", "4",
                       "--output-dir", str(tmp_path / "bank"), *common])
    bank = FactorBank.from_pretrained(tmp_path / "bank")
    assert [t.name for t in bank.tasks] == ["shape", "scale"] and bank.tasks[1].num_classes == 6


def test_image_size_builds_records_and_is_honoured_by_a_factorization(tmp_path: Path) -> None:
    """--image-size on a timm network trained from scratch: a ViT built for 160 px only (test_vit3) is built for
    the size asked, the teacher folder records it (input_size and model_args.img_size), and a factorization of
    the folder runs at it; the data's own size when none is asked."""
    from kf_model.data.export import export_dataset

    data = tmp_path / "sprites"
    export_dataset("dsprites", data, format="csv", limit=32, rgb=True)
    common = ["--data-dir", str(data), "--label-columns", "shape", *STEPS]
    for size, extra in ((32, ["--image-size", "32"]), (64, [])):
        folder = tmp_path / f"teacher-{size}"
        run(TeacherJob, ["--from", "timm:test_vit3", "--finetune", "--output-dir", str(folder), *extra, *common])
        config = json.loads((folder / "config.json").read_text())
        assert config["pretrained_cfg"]["input_size"] == [3, size, size]
        assert config["model_args"] == {"in_chans": 3, "img_size": size}
    run(FactorizeJob, ["--teacher", str(tmp_path / "teacher-32"), "--ckn-width", "4", "--ckn-num-stages", "3",
                       "--ckn-stem-stride", "2", "--tsn-widths", "4", "--tsn-strides", "4",
                       "--output-dir", str(tmp_path / "bank"), *common])
    assert FactorBank.from_pretrained(tmp_path / "bank").input_spec.size == 32


def test_a_teacher_folder_runs_at_the_image_size_asked_or_says_why_not(tmp_path: Path, teacher_folder: Path) -> None:
    """factorize.py --teacher FOLDER --image-size N: a CNN folder runs at N (it was silently kept at its own size);
    a network built for one size, or whose patches do not divide N, is refused in words before any training."""
    from kf_model.teachers import create_teacher, source_input_spec, with_new_head

    assert source_input_spec(str(teacher_folder)).size == 32
    assert source_input_spec(str(teacher_folder), image_size=48).size == 48
    spec = [TaskSpec("class", tuple(str(i) for i in range(10)), "the teacher's own classes")]
    teacher = create_teacher(str(teacher_folder), tasks=spec, one_vs_rest=False, image_size=48)
    assert teacher.input_spec.size == 48
    with torch.no_grad():
        assert teacher(torch.rand(2, 3, 48, 48)).logits["class"].shape == (2, 10)
    with pytest.raises(InvalidConfigError, match=r"timm:test_vit cannot take 40-px images .*patch size.*--image-size"):
        with_new_head("timm:test_vit", weights=None, tasks=spec, one_vs_rest=False, image_size=40)


def test_a_single_head_teacher_for_several_labels_names_the_fix(tmp_path: Path, teacher_folder: Path) -> None:
    from kf_model.data.export import export_dataset

    data = tmp_path / "sprites"
    export_dataset("dsprites", data, format="csv", limit=32, rgb=True)
    with pytest.raises(KFError, match="--label-columns"):
        run(FactorizeJob, ["--teacher", str(teacher_folder), "--data-dir", str(data), "--label-columns", "shape",
                           "scale", "--output-dir", str(tmp_path / "bank"), *STEPS])


# ------------------------------------------------------------------ photo familiarity, examples


def test_leave_one_out_reference_distances_are_those_of_unseen_groups() -> None:
    from kf_model.serving.familiarity import mahalanobis, shrunk_precision
    from kf_model.serving.photo_familiarity import leave_one_out

    torch.manual_seed(0)
    groups = [torch.randn(6, 4) + 3 * torch.randn(1, 4) for _ in range(5)]
    model = leave_one_out(groups)
    first = mahalanobis(groups[0], *shrunk_precision(torch.cat(groups[1:])))
    assert all(bool((model.reference == d).any()) for d in first)
    seen = mahalanobis(groups[0], model.mean, model.precision)
    assert float(seen.mean()) < float(first.mean())  # statistics that saw a group find it closer
    with pytest.raises(KFError, match="at least 3"):
        leave_one_out(groups[:2])


def test_photo_examples_carry_the_teachers_answers(tmp_path: Path) -> None:
    from kf_model.serving.examples import PHOTO_EXAMPLES_FILE, load_examples
    from kf_model.serving.photo_examples import photo_records

    results = {"top_answers": [{"photo": "skimage__chelsea.jpg", "teacher": "cat", "teacher_class": "tabby, tabby cat",
                                "teacher_class_p": 0.4, "p_yes": {"teacher": {"cat": 0.92, "dog": 0.01}}}]}
    records = photo_records(results, "photos")
    assert records[0]["labels"] == {"cat": "cat", "dog": "not dog"} and records[0]["caption"] == "cat (teacher)"
    record = {k: v for k, v in records[0].items() if k != "source"}
    Image.new("RGB", (8, 8)).save(tmp_path / record["file"])
    (tmp_path / PHOTO_EXAMPLES_FILE).write_text(json.dumps({"examples": [record]}))
    example = load_examples(tmp_path)[0]
    assert example.reference == "teacher" and "**cat**" in example.reference_text()
    assert "tabby" in example.reference_text() and "not a ground truth" in example.reference_text()


def test_the_app_opens_on_the_photo_bank_with_the_teachers_answer_as_reference(tmp_path: Path) -> None:
    """One setting (kf_model.ui.context.BANK_ORDER) puts the photo bank first; its examples show the teacher's
    answers, not a "true class"."""
    from types import SimpleNamespace

    from kf_model.serving.examples import Example
    from kf_model.ui.context import AppContext

    registry = SimpleNamespace(bundled=dict.fromkeys(["dsprites", "fashion-mnist", "photo-everyday"]),
                               default="dsprites")
    ctx = AppContext(registry, gate=None, examples=[], exports=None, figures=None)  # type: ignore[arg-type]
    assert ctx.first_bank == "photo-everyday" and ctx.ordered_bundled()[0] == "photo-everyday"
    photo = Example(tmp_path / "cat.jpg", "photos", {"cat": "cat"}, "cat (teacher)", False, "teacher")
    text = AppContext.truth_text(SimpleNamespace(one_vs_rest=True), photo)  # type: ignore[arg-type]
    assert text == photo.reference_text() and "True class" not in text


# ------------------------------------------------------------------ the shipped photo bank and the README


ROOT = Path(__file__).resolve().parents[1]
PHOTO_BANK = ROOT / "assets" / "factors" / "photo-everyday"
PHOTO_RESULTS = PHOTO_BANK / "evaluation" / "photo_bank.json"


@pytest.mark.skipif(not PHOTO_RESULTS.is_file(), reason="the photo bank is not shipped")
def test_held_out_photographs_pass_the_photo_banks_familiarity_check() -> None:
    """The app's own path: the bundled example photos (held out, never fitted on) are familiar to the bank."""
    from kf_model.serving.examples import load_examples
    from kf_model.serving.familiarity import FamiliarityModel, pooled_features

    bank = FactorBank.from_pretrained(PHOTO_BANK)
    model = FamiliarityModel.load(PHOTO_BANK, bank.manifest.ckn_fingerprint)
    photos = [e for e in load_examples() if e.reference == "teacher"]
    assert model is not None and len(photos) == json.loads(PHOTO_RESULTS.read_text())["photos"]
    with torch.no_grad():
        x = torch.cat([bank.preprocess(Image.open(e.path).convert("RGB")) for e in photos])
        scores = model.score(pooled_features(bank.ckn.eval()(x)))
    assert [e.path.name for e, s in zip(photos, scores) if s["unfamiliar"]] == []


@pytest.mark.skipif(not PHOTO_RESULTS.is_file(), reason="the photo bank is not shipped")
def test_readme_photo_section_is_the_recorded_json() -> None:
    from kf_model.evaluation.photos import answers_table, photo_table

    results = json.loads(PHOTO_RESULTS.read_text())
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## A bank for photographs", 1)[1].split("\n## ", 1)[0]
    assert photo_table(results) in section and answers_table(results) in section
    assert f"{results['top_answer_matches']} of {results['photos']} held-out photos" in section
    assert f"{results['assembly_max_abs_diff']:.1e}" in section
    assert results["command"] in section and results["commit"][:10] in section
    for group in results["groups_without_positive"]:
        assert group in section


@pytest.mark.skipif(not PHOTO_RESULTS.is_file(), reason="the photo bank is not shipped")
def test_the_photo_bank_flags_what_no_photograph_looks_like(tmp_path: Path) -> None:
    """Noise, flat colours, gradients and pages of text are flagged before the network (the feature distance alone
    let every one of them pass); the 17 calibration and 11 held-out photographs are not, through the app's path."""
    from kf_model.data.photos import offline_photos, open_photo
    from kf_model.serving import BankRegistry
    from kf_model.serving.probe_images import NOT_PHOTO_KINDS, not_photographs

    (tmp_path / "banks").mkdir()
    (tmp_path / "banks" / PHOTO_BANK.name).symlink_to(PHOTO_BANK)
    registry = BankRegistry(tmp_path / "banks", allow_hub=False, warmup=False)
    tasks = registry.get(PHOTO_BANK.name).task_names[:1]
    probes = not_photographs(seed=1)
    assert set(probes) == set(NOT_PHOTO_KINDS)
    for kind, images in probes.items():
        for image in images:
            verdict = registry.predict(image, PHOTO_BANK.name, tasks).familiarity
            assert verdict["unfamiliar"] and "before the network" in verdict["reason"], (kind, verdict)
    photos = offline_photos("photograph")
    flagged = [p.name for p in photos if registry.predict(open_photo(p), PHOTO_BANK.name, tasks).unfamiliar]
    assert len(photos) == 28 and flagged == []


def test_the_photo_bank_names_its_untested_factors_and_the_app_says_so() -> None:
    """The factors no distillation photo was a positive of are marked in factors.json (by the recipe's card stage)
    and every answer from them says so: in /predict's ``_input`` and next to the row of the table."""
    from kf_model.evaluation.photos import untested_reasons
    from kf_model.serving.predict import Prediction
    from kf_model.ui.answer import untested_text

    results = json.loads(PHOTO_RESULTS.read_text())
    bank = FactorBank.from_pretrained(PHOTO_BANK)
    assert bank.manifest.untested_tasks == untested_reasons(results) and "cat" in bank.manifest.untested_tasks
    prediction = Prediction("photo-everyday", ["cat", "vehicle"], {"cat": {"not cat": 0.9, "cat": 0.1},
                            "vehicle": {"not vehicle": 0.2, "vehicle": 0.8}}, torch.zeros(3, 4, 4), False, [],
                            True, {}, "cpu", untested={"cat": bank.manifest.untested_tasks["cat"]})
    rows = {row[0]: row for row in prediction.table()}
    assert "untested: no photo of one" in rows["cat"][3] and "untested" not in rows["vehicle"][3]
    assert rows["cat"][1] == "cannot tell" and rows["vehicle"][1] == "vehicle"
    chelsea = next(r for r in results["top_answers"] if r["photo"] == "skimage__chelsea.jpg")  # the README's example
    assert chelsea["teacher"] == "cat" and chelsea["p_yes"]["bank"]["cat"] < 0.5
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "the cat factor says \"no\" to scikit-image's cat, where the teacher says cat" in readme
    assert prediction.input_report()["untested_tasks"] == {"cat": "no photo of one among the distillation images"}
    assert untested_text(prediction.untested).startswith("**Untested:** cat.")


def test_untested_tasks_in_a_manifest_are_checked(tmp_path: Path) -> None:
    from kf_model.bank import Manifest

    data = json.loads((PHOTO_BANK / "factors.json").read_text()) if PHOTO_BANK.is_dir() else None
    if data is None:
        pytest.skip("the photo bank is not shipped")
    data["untested_tasks"] = {"unicorn": "never seen"}
    with pytest.raises(CorruptWeightsError, match="unicorn"):
        Manifest.from_dict(data)
    data["untested_tasks"] = ["cat"]
    with pytest.raises(CorruptWeightsError, match="untested_tasks"):
        Manifest.from_dict(data)
    data["untested_tasks"] = {"cat": "x" * 5000}
    assert len(Manifest.from_dict(data).untested_tasks["cat"]) == 300
    del data["untested_tasks"]
    assert Manifest.from_dict(data).untested_tasks == {} and "untested_tasks" not in Manifest.from_dict(data).to_dict()


def test_an_imagenet_teacher_with_repeated_class_names_loads_for_a_task_map(tmp_path: Path) -> None:
    """ImageNet names two classes "crane" (the bird and the machine): a converted 1,000-class teacher carries
    timm's names, and its own-classes task makes them distinct by index instead of refusing the teacher."""
    from kf_model.data.specs import distinct_labels
    from kf_model.teachers.convert import imagenet_label_names

    names = imagenet_label_names(1000)
    assert names is not None and names.count("crane") == 2
    labels = distinct_labels(names)
    assert labels[134] == "crane (134)" and labels[517] == "crane (517)" and len(set(labels)) == 1000
    assert labels[0] == names[0]  # a name that is not repeated stays as it is
    torch.manual_seed(0)
    model = timm.create_model(ARCH, pretrained=False, num_classes=1000).eval()
    torch.save(model.state_dict(), tmp_path / "model.pth")
    folder = tmp_path / "teacher"
    convert_checkpoint(tmp_path / "model.pth", ARCH, folder, mean=(0.5,) * 3, std=(0.5,) * 3, image_size=32)
    assert TeacherFolderConfig.read(folder).label_names == names
    teacher = create_task_map_teacher(str(folder), task_map(1000))
    assert teacher(torch.rand(2, 3, 32, 32)).class_logits.shape == (2, 1000)
