"""Hub-aware modules: ``save_pretrained`` / ``from_pretrained`` from the Hub mixin, safetensors only."""

from __future__ import annotations

import copy
from typing import Any

from huggingface_hub import PyTorchModelHubMixin

from kf_model.errors import (
    UnsafeWeightsError,
)

HUB_KWARGS: dict[str, Any] = dict(
    library_name="kf",
    tags=["knowledge-factorization", "kf"],
    repo_url="https://github.com/kf-project/kf",
    paper_url="https://arxiv.org/abs/2207.03337",
    license="apache-2.0",
)


class SafetensorsOnlyMixin(PyTorchModelHubMixin):
    """The Hub mixin, minus its fallback to pickled ``pytorch_model.bin`` files."""

    @property
    def init_config(self) -> dict[str, Any]:
        """The JSON-able ``__init__`` arguments the mixin records, i.e. what ``config.json`` holds (a copy).

        huggingface_hub 2.x has no public accessor for them: this is the one place in kf that reads the mixin's
        attribute, so the rest of the code (and a future hub release) depends on this property only."""
        return copy.deepcopy(self._hub_mixin_config)

    @classmethod
    def _load_as_pickle(cls, model, model_file, map_location, strict):
        raise UnsafeWeightsError(
            f"refusing to load {model_file}: kf only loads .safetensors weights, never pickles"
        )
