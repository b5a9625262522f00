"""BatchNorm folded through the traced graph: timm and ResNet trunks fold completely and answer the same; what the
graph does not allow (a convolution's output used twice, an unknown BatchNorm kind) stays as it is."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kf_model.bench.workloads import randomize_batchnorm
from kf_model.models.backbones import BackboneConfig, build_backbone
from kf_model.models.ckn import CommonKnowledgeNetwork
from kf_model.models.folded import fold_for_inference
from kf_model.models.traced_folding import conv_batchnorm_pairs, fold_traced_batchnorms


def batchnorms(module: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def assert_same_maps(folded: nn.Module, original: nn.Module, x: Tensor) -> None:
    with torch.inference_mode():
        for a, b in zip(folded(x), original(x), strict=True):
            assert (a - b).abs().max() <= 1e-4 * max(1.0, float(b.abs().max()))


def test_a_timm_trunk_folds_every_batchnorm_into_a_copy_and_answers_the_same() -> None:
    torch.manual_seed(0)
    config = BackboneConfig(arch="timm:efficientnet_lite0", in_channels=3, mean=[0.5] * 3, std=[0.25] * 3)
    trunk = build_backbone(config).eval()
    randomize_batchnorm(trunk)  # fresh BatchNorms are identities: random statistics make the check mean something
    before = {name: value.clone() for name, value in trunk.state_dict().items()}
    folded = fold_for_inference(trunk)
    assert folded is not trunk and batchnorms(trunk) == 49 and batchnorms(folded) == 0
    assert all(torch.equal(value, before[name]) for name, value in trunk.state_dict().items())  # untouched
    assert_same_maps(folded, trunk, torch.rand(2, 3, 64, 64))


def test_a_resnet_ckn_folds_its_blocks_batchnorms() -> None:
    torch.manual_seed(0)
    ckn = CommonKnowledgeNetwork(dict(arch="resnet18", width=8)).eval()
    randomize_batchnorm(ckn)
    folded = fold_for_inference(ckn)
    assert batchnorms(ckn) == 20 and batchnorms(folded) == 0  # the stem, every block and every downsample
    x = torch.rand(3, 1, 28, 28)
    assert_same_maps(lambda images: folded(images).features, lambda images: ckn(images).features, x)


class RawOutputUsedTwice(nn.Module):
    """conv -> bn, and the convolution's raw output added back: folding would change what the add reads."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(x)
        return self.bn2(self.conv2(self.bn(h) + h))


class Untraceable(nn.Module):
    """A forward with a Python condition on the data: fx refuses it, so its children are searched instead."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) if x.sum() > 0 else self.body(-x)


def test_only_a_convolution_used_by_its_batchnorm_alone_folds() -> None:
    torch.manual_seed(0)
    module = RawOutputUsedTwice().eval()
    randomize_batchnorm(module)
    assert conv_batchnorm_pairs(module) == [("conv2", "bn2")]
    x = torch.rand(2, 4, 8, 8)
    with torch.no_grad():
        expected = module(x)
        assert fold_traced_batchnorms(module) == 1
        assert isinstance(module.bn, nn.BatchNorm2d) and isinstance(module.bn2, nn.Identity)
        assert (module(x) - expected).abs().max() <= 1e-5


def test_an_untraceable_forward_is_searched_child_by_child() -> None:
    module = Untraceable().eval()
    randomize_batchnorm(module)
    assert conv_batchnorm_pairs(module) == [("body.0", "body.1")]


def test_an_unknown_batchnorm_kind_is_left_unfolded() -> None:
    class OwnNorm(nn.BatchNorm2d):  # its forward may do more than normalise: not folded
        pass

    module = RawOutputUsedTwice().eval()
    module.bn2 = OwnNorm(4).eval()
    assert conv_batchnorm_pairs(module) == [] and fold_for_inference(module) is module
