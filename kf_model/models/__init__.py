"""The networks of knowledge factorization: backbones, the teacher, the CKN and the TSN.

Every module that is saved to a factor bank is a ``PyTorchModelHubMixin`` whose
``__init__`` takes only JSON-able arguments: they become its ``config.json``, so a
folder on disk or a Hub repo is enough to rebuild it, with no code of ours pickled.

Modules: ``hub`` (the Hub mixin, safetensors only), ``layers``, ``backbones`` (by name), ``teacher``,
``ckn``, ``tsn``, ``stacking`` (k TSNs as one network), ``factor`` (factor and assembled networks).
"""

from kf_model.models.backbones import (
    BACKBONES,
    BackboneConfig,
    TimmBackbone,
    build_backbone,
)
from kf_model.models.ckn import CKNOutput, CommonKnowledgeNetwork
from kf_model.models.layers import (
    InputAdapter,
    global_pool,
)
from kf_model.models.teacher import Teacher, TeacherOutput, one_vs_rest_logits
from kf_model.models.tsn import (
    EncoderConfig,
    TaskSpecificNetwork,
    TSNOutput,
    split_variational,
)
from kf_model.utils import count_parameters

__all__ = [
    "BACKBONES", "BackboneConfig", "CKNOutput", "CommonKnowledgeNetwork", "EncoderConfig", "InputAdapter",
    "TSNOutput", "TaskSpecificNetwork", "Teacher", "TeacherOutput", "TimmBackbone", "build_backbone",
    "count_parameters", "global_pool", "one_vs_rest_logits", "split_variational",
]
