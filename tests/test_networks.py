"""Networks, TSN stacking and exact assembly."""

from __future__ import annotations

import copy
from dataclasses import asdict
from unittest.mock import patch

import pytest
import torch

from kf_model.data.specs import TaskSpec
from kf_model.errors import IncompatibleFactorsError, UnknownNameError
from kf_model.models import (
    CommonKnowledgeNetwork,
    EncoderConfig,
    TaskSpecificNetwork,
    Teacher,
    build_backbone,
    one_vs_rest_logits,
    onednn,
)
from kf_model.models.factor import AssembledNetwork, FactorNetwork
from kf_model.models.folded import (
    AdaptedConv,
    ConvReLU,
    fold_for_inference,
    onednn_available,
    regrouped,
    tasks_per_group,
)
from kf_model.models.stacking import TSNStack

TASKS = [TaskSpec(f"task{i}", tuple(f"c{j}" for j in range(2 + i)), f"task {i}") for i in range(5)]


def randomize_batchnorm(*modules: torch.nn.Module) -> None:
    """Fresh BN layers are identities in eval mode; random statistics make exactness tests meaningful."""
    for module in modules:
        for layer in module.modules():
            if isinstance(layer, torch.nn.BatchNorm2d):
                layer.running_mean.uniform_(-1, 1)
                layer.running_var.uniform_(0.5, 2)
                layer.weight.data.uniform_(0.5, 1.5)
                layer.bias.data.uniform_(-0.5, 0.5)


def make_factors(in_channels: int = 1, variational: bool = False, coords: bool = True,
                 mean: list[float] | None = None, std: list[float] | None = None, tasks: list[TaskSpec] = TASKS):
    torch.manual_seed(0)
    normalisation = {"mean": mean or [0.0], "std": std or [1.0]}
    ckn = CommonKnowledgeNetwork(dict(arch="cnn", in_channels=in_channels, width=8, coord_channels=coords,
                                      **normalisation))
    encoder = asdict(EncoderConfig(in_channels=in_channels, widths=[4, 8, 8], coord_channels=coords, **normalisation))
    tsns = [TaskSpecificNetwork(t.to_dict(), encoder, ckn.width, "fp", variational) for t in tasks]
    randomize_batchnorm(ckn, *tsns)
    return ckn.eval(), [t.eval() for t in tsns]


@pytest.mark.parametrize(("arch", "channels", "size"), [
    ("cnn", 1, 28), ("cnn", 3, 64), ("cnn", 3, 224), ("resnet18", 1, 28), ("resnet18", 3, 64),
])  # resnet18 at 224 px is torchvision's own case, and slow on a CPU
def test_backbones_give_three_stages_for_every_input(arch: str, channels: int, size: int) -> None:
    backbone = build_backbone(dict(arch=arch, in_channels=channels, width=8, coord_channels=True))
    maps = backbone(torch.rand(2, channels, size, size))
    assert [m.shape[1] for m in maps] == backbone.stage_channels
    assert len(maps) == 3 and all(m.shape[0] == 2 for m in maps)


def test_unknown_backbone_is_refused_with_the_known_ones() -> None:
    with pytest.raises(UnknownNameError, match="cnn"):
        build_backbone(dict(arch="vgg99"))


def test_wrong_channel_count_gives_a_clear_error() -> None:
    ckn, _ = make_factors(in_channels=1)
    with pytest.raises(ValueError, match=r"expected images of shape \[B, 1, H, W\]"):
        ckn(torch.rand(1, 3, 28, 28))


def test_teacher_outputs_and_one_vs_rest_reading() -> None:
    teacher = Teacher(dict(arch="cnn", width=8), [t.to_dict() for t in TASKS]).eval()
    out = teacher(torch.rand(3, 1, 28, 28))
    assert [tuple(v.shape) for v in out.logits.values()] == [(3, t.num_classes) for t in TASKS]
    assert [f.shape[1] for f in out.features] == teacher.feature_widths

    binary = [TaskSpec(f"class{i}", ("no", "yes"), "") for i in range(4)]
    ovr = Teacher(dict(arch="cnn", width=8), [t.to_dict() for t in binary], one_vs_rest=True).eval()
    out = ovr(torch.rand(3, 1, 28, 28))
    probabilities = out.class_logits.softmax(-1)
    for i, task in enumerate(binary):
        torch.testing.assert_close(out.logits[task.name].softmax(-1)[:, 1], probabilities[:, i])


def test_one_vs_rest_logits_on_a_hand_example() -> None:
    logits = torch.tensor([[0.0, 0.0, 0.0]])
    pairs = one_vs_rest_logits(logits)
    torch.testing.assert_close(pairs[0, 0], torch.tensor([torch.log(torch.tensor(2.0)).item(), 0.0]))


@pytest.mark.parametrize("variational", [False, True])
def test_assembly_is_exact_whatever_other_tasks_are_present(variational: bool) -> None:
    ckn, tsns = make_factors(variational=variational)
    x = torch.rand(6, 1, 28, 28)
    with torch.no_grad():
        everything = AssembledNetwork(ckn, tsns).eval()(x)
        pair = AssembledNetwork(ckn, [tsns[3], tsns[1]]).eval()(x)
        for tsn in tsns:
            alone = FactorNetwork(ckn, tsn).eval()(x)
            assert (everything[tsn.task.name] - alone).abs().max() <= 1e-5
        for name in pair:
            assert (pair[name] - everything[name]).abs().max() <= 1e-5
    assert list(pair) == ["task3", "task1"]
    assert [tuple(v.shape) for v in everything.values()] == [(6, t.num_classes) for t in TASKS]


@pytest.mark.parametrize("variational", [False, True])
@pytest.mark.parametrize("coords", [False, True])
@pytest.mark.parametrize(("path", "batch"), [("onednn", 1), ("onednn", 3), ("grouped", 3), ("per-task", 3)])
def test_every_inference_path_of_an_assembled_network_equals_the_separate_factors(
        path: str, batch: int, coords: bool, variational: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # an RGB input normalised per channel: the constant map of the first layer is not trivial
    ckn, tsns = make_factors(3, variational, coords, mean=[0.2, 0.5, 0.7], std=[0.3, 0.25, 0.4])
    network = AssembledNetwork(ckn, tsns, for_inference=True)
    x = torch.rand(batch, 3, 30, 30)
    limits = {"onednn": (1 << 40, None), "grouped": (0, None), "per-task": (0, 1)}  # the last two channels-last
    monkeypatch.setattr("kf_model.models.folded.ONEDNN_UP_TO_PIXELS", limits[path][0])
    network.tsns.loop_from_pixels = limits[path][1]
    if path == "onednn" and not onednn_available():
        path = "grouped"
    assert network.tsns.execution_path(x) == path
    with torch.inference_mode():
        fast = network(x)
        full = network(x, return_features=True).tsn.logits
        for tsn in tsns:
            alone = FactorNetwork(ckn, tsn).eval()(x)
            assert (fast[tsn.task.name] - alone).abs().max() <= 1e-5
            assert (full[tsn.task.name] - alone).abs().max() <= 1e-5
    assert list(fast) == [t.name for t in TASKS]


def test_tsn_layers_of_few_channels_per_task_run_as_fewer_groups_with_the_same_outputs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert [tasks_per_group(i, k) for i, k in ((4, 10), (8, 10), (4, 5), (2, 12))] == [2, 1, 1, 4]
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(40, 80, 3, 2, 1, groups=10).eval()
    with torch.no_grad():
        wider = regrouped(conv)
        x = torch.rand(2, 40, 14, 14)
        assert wider.groups == 5 and (wider(x) - conv(x)).abs().max() <= 1e-5
        assert regrouped(torch.nn.Conv2d(80, 160, 3, groups=10)).groups == 10  # 8 inputs per task: left alone
    ckn, tsns = make_factors(tasks=TASKS[:4])  # 4 inputs per task in the second layer: two tasks per group
    network = AssembledNetwork(ckn, tsns, for_inference=True)
    for pixels in (1 << 40, 0):  # oneDNN kernels, then grouped conv2d
        monkeypatch.setattr("kf_model.models.folded.ONEDNN_UP_TO_PIXELS", pixels)
        for x in (torch.rand(1, 1, 28, 28), torch.rand(5, 1, 28, 28)):
            with torch.inference_mode():
                fast = network(x)
                for tsn in tsns:
                    assert (fast[tsn.task.name] - FactorNetwork(ckn, tsn).eval()(x)).abs().max() <= 1e-5


def test_a_fused_network_copies_and_records_gradients_after_an_inference_call() -> None:
    ckn, tsns = make_factors()
    network = AssembledNetwork(ckn, tsns, for_inference=True)
    x = torch.rand(1, 1, 28, 28)
    with torch.inference_mode():
        expected = network(x)  # fills the cache of derived tensors (oneDNN weights cannot be deep-copied)
    copied = copy.deepcopy(network)
    with torch.no_grad():
        for name, logits in copied(x).items():
            assert (logits - expected[name]).abs().max() <= 1e-5
    x.requires_grad_(True)  # e.g. a saliency map: the cached tensors are no inference tensors
    assert network.tsns.execution_path(x) == "grouped"
    sum(v.sum() for v in network(x).values()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_an_inference_assembly_folds_a_copy_of_the_ckn_and_leaves_the_banks_own_untouched() -> None:
    ckn, tsns = make_factors(mean=[0.3], std=[0.2])
    before = {name: value.clone() for name, value in ckn.state_dict().items()}
    network = AssembledNetwork(ckn, tsns, for_inference=True)
    assert network.ckn is not ckn and not any(isinstance(m, torch.nn.BatchNorm2d) for m in network.ckn.modules())
    assert isinstance(network.ckn.backbone.adapter, AdaptedConv)  # the adapter and first conv as one
    assert sum(isinstance(m, ConvReLU) for m in network.ckn.modules()) == 7  # the other 7 conv + ReLU
    assert all(torch.equal(value, before[name]) for name, value in ckn.state_dict().items())
    with torch.inference_mode():
        for x in (torch.rand(3, 1, 28, 28), torch.rand(90, 1, 28, 28)):  # oneDNN kernels; channels-last conv2d
            for folded, original in zip(network.ckn(x).features, ckn(x).features, strict=True):
                assert (folded - original).abs().max() <= 1e-5
            for tsn in tsns:
                assert (network(x)[tsn.task.name] - FactorNetwork(ckn, tsn)(x)).abs().max() <= 1e-5
    assert AssembledNetwork(ckn, tsns).ckn is ckn  # for training: the CKN itself
    resnet = CommonKnowledgeNetwork(dict(arch="resnet18", width=8))  # BatchNorm inside blocks: found by tracing
    assert fold_for_inference(resnet) is not resnet  # (tests/test_traced_folding.py)


def test_stack_round_trip_is_bit_identical_and_trains_like_separate_tsns() -> None:
    ckn, tsns = make_factors()
    stack = TSNStack(tsns)
    for original, back in zip(tsns, stack.unstack(), strict=True):
        for (name, a), (other, b) in zip(original.state_dict().items(), back.state_dict().items(), strict=True):
            assert name == other and torch.equal(a, b), name
    # gradients of the stacked heads reach only each task's own classes (padding stays untouched)
    stack.train()
    out = stack(torch.rand(4, 1, 28, 28), torch.rand(4, ckn.width))
    sum(v.sum() for v in out.logits.values()).backward()
    assert stack.head_weight.grad[0, 2:].abs().sum() == 0  # task0 has 2 classes, padded to 6
    assert stack.head_weight.grad[4].abs().sum() > 0


def test_variational_tsn_samples_in_training_and_uses_mu_at_inference() -> None:
    ckn, tsns = make_factors(variational=True)
    x, z_common = torch.rand(4, 1, 28, 28), torch.rand(4, ckn.width)
    tsn = tsns[0]
    inference = tsn(x, z_common)
    torch.testing.assert_close(inference.z, inference.mu)
    tsn.train()
    torch.manual_seed(1)
    sample = tsn(x, z_common)
    assert not torch.allclose(sample.z, sample.mu)


def test_tsns_from_different_factorizations_do_not_stack() -> None:
    ckn, tsns = make_factors()
    stranger = TaskSpecificNetwork(
        TASKS[0].to_dict() | {"name": "other"}, asdict(tsns[0].encoder_config), ckn.width, "another-fingerprint"
    )
    with pytest.raises(IncompatibleFactorsError, match="different factorizations"):
        AssembledNetwork(ckn, [tsns[1], stranger])


def test_tsn_for_another_ckn_width_is_refused() -> None:
    ckn, tsns = make_factors()
    wide = TaskSpecificNetwork(TASKS[0].to_dict(), asdict(tsns[0].encoder_config), ckn.width * 2, "fp")
    with pytest.raises(IncompatibleFactorsError, match="width"):
        FactorNetwork(ckn, wide)


class _Logits(torch.nn.Module):
    """An assembled network's {task: logits} as a tuple, what torch.jit.trace takes."""

    def __init__(self, network: AssembledNetwork) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.network(x).values())


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore:.*deprecated:FutureWarning")
@pytest.mark.parametrize(("arch", "coords", "called_first"), [
    ("cnn", True, False), ("cnn", False, True), ("resnet18", True, True), ("timm:resnet10t", False, False),
])
def test_an_inference_network_can_be_traced_with_torch_jit(arch: str, coords: bool, called_first: bool) -> None:
    """torch.jit.trace of a bank's network for inference (it failed on the private oneDNN calls, an internal
    assert in TorchScript): public ops only while traced, the same answers for other images of the size traced,
    whether or not the network had run (and filled its caches) before."""
    ckn, tsns = make_factors(1, coords=coords)
    if arch != "cnn":
        ckn = CommonKnowledgeNetwork(dict(arch=arch, in_channels=1, coord_channels=coords))
        randomize_batchnorm(ckn)
        tsns = [TaskSpecificNetwork(t.task.to_dict(), asdict(t.encoder_config), ckn.width, "fp") for t in tsns]
        randomize_batchnorm(*tsns)
    network = AssembledNetwork(ckn.eval(), [t.eval() for t in tsns], for_inference=True)
    example, other = torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32)
    onednn.reset()
    fast_path = onednn_available()
    with torch.no_grad():
        if called_first:
            network(example)
        traced = torch.jit.trace(_Logits(network).eval(), example, check_trace=False)
        assert "mkldnn" not in str(traced.inlined_graph)
        for x in (example, other):
            for tsn, answer in zip(tsns, traced(x), strict=True):
                assert (answer - FactorNetwork(ckn, tsn).eval()(x)).abs().max() <= 1e-5
    assert onednn_available() == fast_path  # the trace never reached (and tripped) the private ops' fallback


def test_images_reach_cpu_convolutions_channels_last_but_never_while_traced() -> None:
    from kf_model.models.layers import channels_last_on_cpu

    rgb, grey = torch.rand(2, 3, 8, 8), torch.rand(2, 1, 8, 8)
    laid_out = channels_last_on_cpu(rgb)
    assert laid_out.is_contiguous(memory_format=torch.channels_last) and torch.equal(laid_out, rgb)
    assert channels_last_on_cpu(grey) is grey  # one channel: both layouts already
    assert channels_last_on_cpu(torch.rand(2, 3)) is not None and channels_last_on_cpu(rgb[0]).ndim == 3
    traced = torch.jit.trace(lambda x: channels_last_on_cpu(x) * 1, rgb)
    assert traced(rgb).is_contiguous()  # a traced graph keeps the layout it was given


def test_a_timm_trunk_and_teacher_answer_the_same_in_either_layout() -> None:
    """The layout changes the kernels, not the answer."""
    from kf_model.models.backbones import BackboneConfig, build_backbone
    from kf_model.models.layers import channels_last_on_cpu

    config = BackboneConfig(arch="timm:efficientnet_lite0", in_channels=3, mean=[0.5] * 3, std=[0.25] * 3)
    trunk = build_backbone(config).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        fast = trunk(x)
        with patch("kf_model.models.backbones.channels_last_on_cpu", lambda images: images):
            plain = trunk(x)
    assert [tuple(m.shape) for m in fast] == [tuple(m.shape) for m in plain]
    for a, b in zip(fast, plain):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    assert channels_last_on_cpu(x).is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("assembled", [True, False])
def test_bad_network_inputs_are_refused_in_words_before_any_kernel(assembled: bool) -> None:
    """3-D/2-D tensors (IndexError in the stack), other dtypes (a conv's RuntimeError), batch 0, arrays, lists."""
    import numpy as np

    from kf_model.errors import InvalidImageError

    ckn, tsns = make_factors()
    net = AssembledNetwork(ckn, tsns[:2], for_inference=True) if assembled else FactorNetwork(ckn, tsns[0])
    cases = [(torch.rand(1, 28, 28), r"shape \[B, 1, H, W\], got \[1, 28, 28\] \(one image: add the batch axis"),
             (torch.rand(28, 28), r"shape \[B, 1, H, W\], got \[28, 28\]"),
             (torch.rand(0, 1, 28, 28), "at least one image, got a batch of 0"),
             (np.zeros((1, 1, 28, 28), np.float32), "tensor of float32 images .* got a ndarray"),
             ([[[[0.0]]]], "got a list")]
    cases += [(torch.zeros(1, 1, 28, 28, dtype=dtype), f"float32 images in \\[0, 1\\], as FactorBank.preprocess "
               f"makes them, got {dtype}") for dtype in (torch.uint8, torch.float64, torch.int64, torch.bool)]
    with torch.no_grad():
        for x, message in cases:
            with pytest.raises(InvalidImageError, match=message):
                net(x)
        assert net(torch.rand(1, 1, 28, 28)) is not None


def test_pass_lengths_on_known_sizes() -> None:
    from kf_model.models.passes import pass_length

    lite0, resnet18 = 13 * 2**20, 43 * 2**20  # bytes of weights
    assert pass_length(32, 224, 224, lite0) == 2  # photographs: two at a time
    assert pass_length(3, 224, 224, lite0) == 2 and pass_length(1, 224, 224, lite0) == 1
    assert pass_length(8, 448, 448, lite0) == 1  # one image is already more than a pass's pixels
    assert pass_length(256, 64, 64, lite0) == 256 and pass_length(256, 28, 28, lite0) == 256  # small images
    assert pass_length(32, 224, 224, resnet18) == 32  # weights outgrowing the cache: one pass


def test_large_images_are_inferred_in_passes_with_the_same_answers() -> None:
    from kf_model.models.passes import images_per_pass

    ckn, tsns = make_factors(3, mean=[0.2, 0.5, 0.7], std=[0.3, 0.25, 0.4])
    network = AssembledNetwork(ckn, tsns, for_inference=True)
    x = torch.rand(5, 3, 224, 224)
    calls: list[int] = []
    one_pass = network._logits

    def counted(part: torch.Tensor) -> dict[str, torch.Tensor]:
        calls.append(part.shape[0])
        return one_pass(part)

    network._logits = counted
    with torch.inference_mode():
        assert images_per_pass(network, x) == 2 and images_per_pass(network, x[:1]) == 1
        whole = one_pass(x)
        parts = network(x)
    assert calls == [2, 2, 1]
    assert list(parts) == list(whole) and all((parts[k] - whole[k]).abs().max() <= 1e-5 for k in whole)
    with torch.no_grad(), torch.enable_grad():
        assert images_per_pass(network, x) == 5  # gradients (training): one pass
    with torch.inference_mode():
        assert images_per_pass(network, x.to("meta")) == 5  # only the CPU
        assert images_per_pass(network, torch.rand(64, 3, 64, 64)) == 64


def test_passes_join_what_the_networks_return() -> None:
    from kf_model.models.passes import in_passes
    from kf_model.models.teacher import TeacherOutput

    teacher = Teacher(dict(arch="cnn", in_channels=3, width=8), [t.to_dict() for t in TASKS[:2]], False).eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        whole, parts = teacher(x), in_passes(teacher, x, per_pass=2)
    assert isinstance(parts, TeacherOutput) and parts.class_logits is None
    assert all((parts.logits[k] - whole.logits[k]).abs().max() <= 1e-5 for k in whole.logits)
    assert all((a - b).abs().max() <= 1e-5 for a, b in zip(parts.features, whole.features, strict=True))
