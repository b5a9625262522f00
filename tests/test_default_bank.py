"""The API's bank when none is given is the bank the page opens with (BANK_ORDER's first: the photo bank)."""

from __future__ import annotations

from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from kf_model.serving import BANK_ORDER, BankRegistry
from tests.app_fixtures import make_bank, running_demo, write_banks, write_images

pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")  # pandas deprecations inside gradio


def add_photo_bank(folder: Path) -> None:
    """A bank named like the photo bank (fashion-mnist's tasks: none of dsprites')."""
    make_bank("fashion-mnist", seed=1).save_pretrained(folder / BANK_ORDER[0])


def test_the_registry_default_is_the_first_bank_of_the_page(tmp_path: Path) -> None:
    folder = write_banks(tmp_path / "banks")
    assert BankRegistry(folder, allow_hub=False, warmup=False).default == "dsprites"  # alphabetical when not named
    add_photo_bank(folder)
    registry = BankRegistry(folder, allow_hub=False, warmup=False)
    assert registry.default == "photo-everyday"
    assert registry.keys == ["photo-everyday", "dsprites", "fashion-mnist"]  # the dropdown's order


def test_the_api_without_a_bank_answers_with_the_pages_first_bank(tmp_path: Path) -> None:
    image = write_images(tmp_path / "images")["grey.png"]
    with running_demo(tmp_path / "banks", prepare=add_photo_bank) as (url, demo):
        assert demo.kf_context.first_bank == "photo-everyday"
        client = Client(url, verbose=False)
        parameters = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/predict"][
            "parameters"]
        assert parameters[1]["parameter_name"] == "bank" and parameters[1]["parameter_default"] == "photo-everyday"
        tasks = demo.kf_registry.get("photo-everyday").task_names
        for bank in ("", None):
            result = client.predict(handle_file(str(image)), bank, [], api_name="/predict")
            assert sorted(key for key in result if key != "_input") == sorted(tasks)
        result = client.predict(handle_file(str(image)), tasks=[], api_name="/predict")  # bank left out
        assert sorted(key for key in result if key != "_input") == sorted(tasks)
