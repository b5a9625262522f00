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
    CNNBackbone,
    ResNet18Backbone,
    TimmBackbone,
    build_backbone,
)
from kf_model.models.ckn import CKNOutput, CommonKnowledgeNetwork
from kf_model.models.factor import AssembledNetwork, AssembledOutput, FactorNetwork
from kf_model.models.hub import HUB_KWARGS, SafetensorsOnlyMixin
from kf_model.models.layers import InputAdapter, conv_bn_relu, global_pool
from kf_model.models.stacking import StackOutput, TSNStack, check_stackable
from kf_model.models.teacher import Teacher, TeacherOutput, one_vs_rest_logits
from kf_model.models.tsn import EncoderConfig, GroupedEncoder, TaskSpecificNetwork, TSNOutput, split_variational
from kf_model.utils import count_parameters

__all__ = [
    "BACKBONES", "HUB_KWARGS", "AssembledNetwork", "AssembledOutput", "BackboneConfig",
    "CKNOutput", "CNNBackbone", "CommonKnowledgeNetwork", "EncoderConfig", "FactorNetwork", "GroupedEncoder",
    "InputAdapter", "ResNet18Backbone", "SafetensorsOnlyMixin", "StackOutput", "TSNOutput", "TSNStack",
    "TaskSpecificNetwork", "Teacher", "TeacherOutput", "TimmBackbone", "build_backbone", "check_stackable",
    "conv_bn_relu", "count_parameters", "global_pool", "one_vs_rest_logits", "split_variational",
]
