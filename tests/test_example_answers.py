"""The examples' answers are kept: a second click on an example (or the next visitor's first screen) does not run the
network again; anything else always does."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kf_model.serving import EXAMPLES_DIR, BankRegistry, ExampleAnswers, PredictionGate, load_examples
from kf_model.serving.runtime import ServingRuntime
from kf_model.ui.context import AppContext
from kf_model.ui.predicting import predict_outputs
from tests.app_fixtures import write_banks


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> BankRegistry:
    return BankRegistry(write_banks(tmp_path_factory.mktemp("banks")), allow_hub=False, warmup=False)


@pytest.fixture
def forward_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the network's forward passes (whichever runtime runs them)."""
    calls: list[int] = []
    real = ServingRuntime.forward

    def counted(self, *args, **kwargs):
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ServingRuntime, "forward", counted)
    return calls


def example_copy(tmp_path: Path, dataset: str, index: int = 0) -> Path:
    """An example's file under another name, as Gradio hands it to the app (a copy in its cache)."""
    example = [e for e in load_examples() if e.dataset == dataset][index]
    copy = tmp_path / f"{index}-{example.path.name}"
    shutil.copyfile(example.path, copy)
    return copy


def test_the_second_click_on_an_example_does_not_run_the_network(registry: BankRegistry, tmp_path: Path,
                                                                  forward_calls: list[int]) -> None:
    ctx = AppContext.create(registry, EXAMPLES_DIR, predictions=2, loads=1)
    tasks = registry.get("dsprites").task_names
    first = predict_outputs(ctx, str(example_copy(tmp_path, "dsprites")), "dsprites", tasks, "auto")
    assert len(forward_calls) == 1
    (tmp_path / "later").mkdir()  # the next click: another copy of the same file
    second = predict_outputs(ctx, str(example_copy(tmp_path / "later", "dsprites")), "dsprites", tasks, "auto")
    assert len(forward_calls) == 1, "the kept answer was not used"
    assert second[2]["value"].equals(first[2]["value"])  # the same table
    assert "Answered at once" in second[3] and "Answered at once" not in first[3]


def test_the_key_is_bank_tasks_invert_and_example(registry: BankRegistry, tmp_path: Path,
                                                  forward_calls: list[int]) -> None:
    answers = ExampleAnswers(load_examples())
    gate = PredictionGate(registry, predictions=2, loads=1)
    tasks = registry.get("dsprites").task_names
    image = str(example_copy(tmp_path, "dsprites"))
    requests = [("dsprites", tasks, None), ("dsprites", tasks[:2], None), ("dsprites", tasks, True),
                ("fashion-mnist", registry.get("fashion-mnist").task_names, None)]
    for bank, ticked, invert in requests:
        assert not answers.predict(gate, image, bank, ticked, invert=invert).cached
    assert len(forward_calls) == len(requests)
    for bank, ticked, invert in requests:  # the same tick set in another order is the same key
        assert answers.predict(gate, image, bank, list(reversed(ticked)), invert=invert).cached
    assert len(forward_calls) == len(requests) and len(answers) == len(requests)
    other = str(example_copy(tmp_path, "dsprites", 1))
    answers.predict(gate, other, "dsprites", tasks)
    assert len(forward_calls) == len(requests) + 1


def test_a_visitors_own_image_is_always_answered_afresh(registry: BankRegistry, tmp_path: Path,
                                                        forward_calls: list[int]) -> None:
    answers = ExampleAnswers(load_examples())
    gate = PredictionGate(registry, predictions=2, loads=1)
    own = tmp_path / "own.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(own)
    tasks = registry.get("dsprites").task_names
    for _ in range(2):
        assert not answers.predict(gate, str(own), "dsprites", tasks).cached
        assert not answers.predict(gate, Image.open(own), "dsprites", tasks).cached
    assert len(forward_calls) == 4 and len(answers) == 0


def test_the_kept_answers_are_bounded(registry: BankRegistry, tmp_path: Path) -> None:
    answers = ExampleAnswers(load_examples(), max_answers=2)
    gate = PredictionGate(registry, predictions=2, loads=1)
    tasks = registry.get("fashion-mnist").task_names
    for index in range(4):
        answers.predict(gate, str(example_copy(tmp_path, "fashion-mnist", index)), "fashion-mnist", tasks)
    assert len(answers) == 2
