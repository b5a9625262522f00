"""The one seam on huggingface_hub's private names (kf_model/models/hub.py): the mixin's recorded __init__
arguments (``init_config``) and its pickle loader (refused)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kf_model.data import DSPRITES_INPUT_SPEC
from kf_model.errors import UnsafeWeightsError
from kf_model.models import CommonKnowledgeNetwork
from kf_model.models.files import CONFIG_FILE, load_module, save_module
from kf_model.training import backbone_config


def make_ckn() -> CommonKnowledgeNetwork:
    return CommonKnowledgeNetwork(backbone_config("cnn", 4, 3, 2, True, DSPRITES_INPUT_SPEC))


def test_init_config_is_what_config_json_holds_and_a_copy(tmp_path: Path) -> None:
    ckn = make_ckn()
    config = ckn.init_config
    config["backbone"]["width"] = 999  # a copy: the network's record does not change
    assert ckn.init_config["backbone"]["width"] == 4
    save_module(ckn, tmp_path / "ckn")
    assert json.loads((tmp_path / "ckn" / CONFIG_FILE).read_text()) == ckn.init_config
    again = load_module(CommonKnowledgeNetwork, tmp_path / "ckn", "ckn")
    assert all(torch.equal(a, b) for a, b in zip(ckn.state_dict().values(), again.state_dict().values(), strict=True))


def test_the_mixins_from_pretrained_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / CONFIG_FILE).write_text(json.dumps(make_ckn().init_config))
    torch.save(make_ckn().state_dict(), folder / "pytorch_model.bin")

    def unpickling(*args, **kwargs):
        raise AssertionError("torch.load was called on a pickle")

    monkeypatch.setattr(torch, "load", unpickling)
    with pytest.raises((UnsafeWeightsError, FileNotFoundError)):  # refused (hub 1.x fallback) or not looked for
        CommonKnowledgeNetwork.from_pretrained(folder)
