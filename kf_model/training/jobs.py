"""What differs between the scripts: the networks, the loss, the validation and what is saved."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from kf_model.bank import FactorBank, save_module
from kf_model.data.specs import InputSpec
from kf_model.errors import KFError
from kf_model.limits import MAX_STAGES
from kf_model.losses import IMBConfig, IMBObjective, distillation_objective, label_smoothed_ce, multitask_ce
from kf_model.models import (
    BackboneConfig,
    CommonKnowledgeNetwork,
    EncoderConfig,
    TaskSpecificNetwork,
    Teacher,
    TimmBackbone,
    count_parameters,
)
from kf_model.models.factor import AssembledNetwork
from kf_model.models.freezing import freeze_early_stages
from kf_model.teachers import (
    SOURCE_FORMS,
    ExternalTeacher,
    TaskMap,
    TaskMapTeacher,
    create_task_map_teacher,
    create_teacher,
    describe_teacher,
    load_weights,
    source_input_spec,
    with_new_head,
)
from kf_model.teachers.heads import classifier_prefix, head_parameters, save_fitted_teacher
from kf_model.training.config import (
    ArchitectureConfig,
    DistillJobConfig,
    FactorizeJobConfig,
    FactorNetworksConfig,
    JobConfig,
    TeacherJobConfig,
    TeacherSourceConfig,
    backbone_arch,
)
from kf_model.training.data import DataInfo
from kf_model.training.loop import read_summary
from kf_model.training.options import (
    NON_NEGATIVE,
    POSITIVE,
    REQUIRED,
    SMOOTHING,
    STRIDE,
    WIDTH,
    base_parser,
    parse_args,
    ranged,
)


def backbone_config(arch: str, width: int, num_stages: int, stem_stride: int, coord_channels: bool,
                    input_spec: InputSpec) -> dict[str, Any]:
    return asdict(BackboneConfig(arch=arch, in_channels=input_spec.channels, width=width, num_stages=num_stages,
                                 stem_stride=stem_stride, coord_channels=coord_channels,
                                 mean=list(input_spec.mean), std=list(input_spec.std)))


def add_backbone_arguments(parser: argparse.ArgumentParser, prefix: str = "", width: int = 32) -> None:
    group = parser.add_argument_group(f"{prefix or 'backbone'} architecture".strip("-"))
    group.add_argument(f"--{prefix}arch", type=backbone_arch, default="cnn",
                       help="cnn, resnet18 (small-image ResNet-18) or timm:<name> (any timm architecture)")
    group.add_argument(f"--{prefix}width", type=WIDTH, default=width, help="cnn: channels of the first stage")
    group.add_argument(f"--{prefix}num-stages", type=ranged(int, 3, MAX_STAGES), default=4,
                       help="cnn: stages (width doubles at each; the last 3 are distilled)")
    group.add_argument(f"--{prefix}stem-stride", type=STRIDE, default=1, help="2 halves the resolution at once")


def load_teacher(source: TeacherSourceConfig, info: DataInfo) -> nn.Module:
    """The frozen teacher (--teacher, --teacher-weights): eval mode (its BatchNorm statistics must not drift),
    no gradients; any of the forms kf_model.teachers reads, checked against the data's tasks."""
    return create_teacher(source.teacher, tasks=info.tasks, one_vs_rest=info.one_vs_rest,
                          weights=source.teacher_weights, image_size=source.image_size)


def add_teacher_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", help=f"the network to learn from (required): {SOURCE_FORMS}")
    parser.add_argument("--teacher-weights", help="safetensors weights of a timm:<name> / torchvision:<name> teacher")


class Job:
    """What differs between the scripts. ``build`` sets ``model`` (trained and saved), optionally
    ``objective`` (a module with trainable parameters of the loss) and ``teacher`` (frozen)."""

    name = ""
    script = ""
    description = ""
    model: nn.Module
    objective: nn.Module | None = None
    teacher: Teacher | None = None
    kway_model = True  # a Teacher-class model: one-vs-rest tasks are read from its K-way argmax
    required: tuple[str, ...] = REQUIRED  # options that must come from the command line or --config
    config_class: type[JobConfig] = JobConfig  # what the job reads; built from the parsed flags by its from_args

    def __init__(self, config: JobConfig, info: DataInfo) -> None:
        self.config, self.info = config, info
        if not info.tasks:
            raise KFError(f"{info.name} has no labels: unlabelled images are distillation data for "
                          "train/factorize.py --task-map FILE.json (the teacher gives every target)")

    @classmethod
    def parser(cls) -> argparse.ArgumentParser:
        parser = base_parser(cls.description)
        cls.add_arguments(parser)
        return parser

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        pass

    @classmethod
    def data_input_spec(cls, config: JobConfig) -> InputSpec | None:
        """The input (size, channels, normalisation) the data must be prepared with: the teacher's, when it
        comes from timm or torchvision; None lets the dataset decide."""
        return None

    def recorded_options(self) -> dict[str, Any]:
        """The option values the run records (training.json's ``args``): as parsed, plus what the job chose."""
        return dict(self.config.run.options)

    def build(self) -> None:
        raise NotImplementedError

    def select_data(self, dataset: Dataset) -> Dataset:
        """The part of a train/validation set this job uses (e.g. some task columns); default: all of it."""
        return dataset

    def loss(self, model: nn.Module, objective: nn.Module | None, images: Tensor,
             targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def predict(self, model: nn.Module, images: Tensor) -> dict[str, Tensor]:
        """{task: logits} of the trained model, for the quick validation."""
        return model(images).logits

    def parameter_counts(self) -> dict[str, int]:
        return {"model": count_parameters(self.model)}

    def save(self, output_dir: Path, model: nn.Module, summary: dict[str, Any]) -> None:
        """Write the trained model (main process only)."""
        save_module(model, output_dir)


def teacher_input_spec(source: TeacherSourceConfig) -> InputSpec | None:
    """The input a teacher named by ``source`` takes (None: a kf teacher, the dataset decides)."""
    return source_input_spec(source.teacher, weights=source.teacher_weights,
                             image_size=source.image_size) if source.teacher else None


def student_backbone(arch: ArchitectureConfig, info: DataInfo, width: int | None = None) -> dict[str, Any]:
    """A Teacher-class network's backbone config on ``info``'s input (``width`` overrides the config's)."""
    return backbone_config(arch.arch, arch.width if width is None else width, arch.num_stages, arch.stem_stride,
                           arch.coord_channels, info.input_spec)


class TeacherJob(Job):
    """The multi-task teacher: multitask CE, or for a one-vs-rest dataset K-way CE on its class logits."""

    name = "teacher"
    script = "train/train_teacher.py"
    description = "Train the multi-task teacher network."
    config_class = TeacherJobConfig
    config: TeacherJobConfig

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        add_backbone_arguments(parser)
        parser.add_argument("--coord-channels", action=argparse.BooleanOptionalAction, default=False,
                            help="append x/y coordinate maps to the input (position tasks need them)")
        parser.add_argument("--label-smoothing", type=SMOOTHING, default=0.1)
        pretrained = parser.add_argument_group("a pretrained network with a new head for your classes")
        pretrained.add_argument("--from", dest="from_model", metavar="timm:NAME|torchvision:NAME",
                                help="start from this architecture (and --teacher-weights) instead of --arch")
        pretrained.add_argument("--teacher-weights", help="safetensors weights of the --from network (its trunk)")
        pretrained.add_argument("--finetune", action="store_true",
                                help="train the whole network (default: a linear probe, only the new head)")

    @classmethod
    def data_input_spec(cls, config: JobConfig) -> InputSpec | None:
        """A pretrained --from network's input; None (the data's own size and statistics) for one trained from
        scratch without --image-size: a 32-px dataset at a ViT's 160-px default trains 35x slower, and worse."""
        assert isinstance(config, TeacherJobConfig)
        if from_scratch(config):
            return None
        return teacher_input_spec(TeacherSourceConfig(config.from_model, config.teacher_weights, config.image_size))

    def build(self) -> None:
        a, info = self.config, self.info
        if a.from_model:
            self.model = with_new_head(a.from_model, weights=a.teacher_weights, tasks=info.tasks,
                                       one_vs_rest=info.one_vs_rest, image_size=a.image_size,
                                       input_spec=info.input_spec if from_scratch(a) else None)
            if not a.finetune:  # linear probe: only the new head learns; the trunk keeps its BatchNorm statistics
                self.model.requires_grad_(False)
                for parameter in head_parameters(self.model):
                    parameter.requires_grad_(True)
            return
        self.model = Teacher(student_backbone(a.backbone, info), [t.to_dict() for t in info.tasks],
                             one_vs_rest=info.one_vs_rest)

    def save(self, output_dir: Path, model: nn.Module, summary: dict[str, Any]) -> None:
        if isinstance(model, ExternalTeacher):
            save_fitted_teacher(model, output_dir, {"finetune": bool(self.config.finetune),
                                                    "weights": self.config.teacher_weights})
        else:
            save_module(model, output_dir)

    def loss(self, model, objective, images, targets):
        out = model(images)
        if self.info.one_vs_rest:
            ce = label_smoothed_ce(out.class_logits, targets.argmax(dim=1), self.config.label_smoothing)
        else:
            ce = multitask_ce(out.logits, targets, self.config.label_smoothing)
        return ce, {"ce": ce.detach()}


def from_scratch(config: TeacherJobConfig) -> bool:
    """A --from architecture with no weights and no --image-size: it takes the data's input as it is."""
    return bool(config.from_model and config.teacher_weights is None and config.image_size is None)


class DistillJob(Job):
    """The multi-task KD baseline: a smaller Teacher-class student, CE + KD from the frozen teacher."""

    name = "distill"
    script = "train/distill.py"
    description = "Distil one multi-task student from a frozen teacher (the KD baseline of the paper)."
    required = (*REQUIRED, "teacher")
    config_class = DistillJobConfig
    config: DistillJobConfig

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        add_teacher_arguments(parser)
        add_backbone_arguments(parser)
        parser.set_defaults(width=None)
        parser.add_argument("--coord-channels", action=argparse.BooleanOptionalAction, default=False)
        parser.add_argument("--match-factorization", metavar="CONFIG",
                            help="a factorize.py --config: report its CKN + TSNs parameter count and, without "
                                 "--width, pick the cnn width whose student comes closest to it")
        parser.add_argument("--label-smoothing", type=SMOOTHING, default=0.1)
        parser.add_argument("--lambda-kd", type=NON_NEGATIVE, default=1.0,
                            help="weight of the KD term (CE has weight 1)")
        parser.add_argument("--kd-temperature", type=POSITIVE, default=4.0)

    @classmethod
    def data_input_spec(cls, config: JobConfig) -> InputSpec | None:
        assert isinstance(config, DistillJobConfig)
        return teacher_input_spec(config.teacher)

    def student(self, width: int) -> Teacher:
        info = self.info
        return Teacher(student_backbone(self.config.student, info, width), [t.to_dict() for t in info.tasks],
                       one_vs_rest=info.one_vs_rest)

    def build(self) -> None:
        a = self.config
        self.teacher = load_teacher(a.teacher, self.info)
        self.factorization_params = None
        if a.match_factorization:
            self.factorization_params = factorization_parameter_count(a.match_factorization, self.info)
        width = a.student.width
        if width is None:  # the config guarantees --match-factorization
            assert self.factorization_params is not None
            width = matching_width(lambda w: count_parameters(self.student(w)), self.factorization_params)
        self.width = width  # the student's width, chosen or given
        self.model = self.student(width)
        if self.factorization_params is not None:
            print(f"KD student (cnn width {width}): {count_parameters(self.model):,} parameters; "
                  f"factorization (CKN + all TSNs): {self.factorization_params:,}")

    def recorded_options(self) -> dict[str, Any]:
        return {**super().recorded_options(), "width": self.width}

    def loss(self, model, objective, images, targets):
        a = self.config
        with torch.no_grad():
            teacher = self.teacher(images)
        student = model(images)
        if self.info.one_vs_rest:  # distil the K-way classifier, as a K-way student
            return distillation_objective({"class": student.class_logits}, targets.argmax(dim=1, keepdim=True),
                                          {"class": teacher.class_logits}, label_smoothing=a.label_smoothing,
                                          lambda_kd=a.lambda_kd, temperature=a.kd_temperature)
        return distillation_objective(student.logits, targets, teacher.logits, label_smoothing=a.label_smoothing,
                                      lambda_kd=a.lambda_kd, temperature=a.kd_temperature)

    def parameter_counts(self) -> dict[str, int]:
        counts = {"model": count_parameters(self.model), "teacher": count_parameters(self.teacher)}
        if self.factorization_params is not None:
            counts["factorization"] = self.factorization_params
        return counts


class FactorizeJob(Job):
    """Knowledge factorization: AssembledNetwork(CKN, TSNs) + IMB objective from the frozen teacher."""

    name = "factorize"
    kway_model = False  # every factor decides its own binary task
    script = "train/factorize.py"
    description = "Factorize a frozen teacher into a common knowledge network and one TSN per task (IMB)."
    required = (*REQUIRED, "teacher")
    config_class = FactorizeJobConfig
    config: FactorizeJobConfig

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        add_teacher_arguments(parser)
        add_backbone_arguments(parser, prefix="ckn-", width=16)
        parser.add_argument("--coord-channels", action=argparse.BooleanOptionalAction, default=False,
                            help="coordinate maps in the CKN and the TSN encoders")
        parser.add_argument("--init-ckn-from-teacher", action=argparse.BooleanOptionalAction, default=False,
                            help="start the CKN from the teacher's backbone (same architecture needed)")
        parser.add_argument("--freeze-ckn-stages", type=ranged(int, 0, 16), default=0,
                            help="with --init-ckn-from-teacher (timm): keep the teacher's first N feature stages "
                                 "as they are (weights and BatchNorm statistics; their backward pass is skipped)")
        parser.add_argument("--task-map", metavar="FILE.json",
                            help="factorize a K-way teacher into the task map's questions (groups of its classes: "
                                 "P = softmax summed over a group) instead of the data's labels; kf_model.teachers."
                                 "task_maps, python -m kf_model.teachers task-map")
        tsn = parser.add_argument_group("task-specific networks")
        tsn.add_argument("--tsn-widths", type=WIDTH, nargs="+", default=[8, 16, 32])
        tsn.add_argument("--tsn-strides", type=STRIDE, nargs="+", default=[2, 2, 2])
        tsn.add_argument("--variational", action="store_true", help="TSNs output (mu, logvar) and sample z")
        imb = parser.add_argument_group("IMB objective (kf_model.losses.IMBConfig)")
        defaults = IMBConfig()
        imb.add_argument("--infomin", choices=("batch", "vib"), default=defaults.infomin,
                         help="batch: KL of the batch moments of z_i (reference); vib: per-sample KL (needs "
                              "--variational)")
        kinds = {"label_smoothing": SMOOTHING, "task_weight": NON_NEGATIVE, "lambda_kd": NON_NEGATIVE,
                 "kd_temperature": POSITIVE, "lambda_feat": NON_NEGATIVE, "infomax_temperature": POSITIVE,
                 "beta": NON_NEGATIVE}  # the ranges IMBConfig checks
        for name, kind in kinds.items():
            imb.add_argument(f"--{name.replace('_', '-')}", type=kind, default=getattr(defaults, name))
        hub = parser.add_argument_group("Hub")
        hub.add_argument("--push-to-hub", metavar="REPO_ID", help="also publish the bank to this Hub repo")
        hub.add_argument("--hub-tag", help="tag the pushed commit")
        hub.add_argument("--hub-private", action="store_true", help="create the repo as private")

    @classmethod
    def data_input_spec(cls, config: JobConfig) -> InputSpec | None:
        assert isinstance(config, FactorizeJobConfig)
        return teacher_input_spec(config.teacher)

    def __init__(self, config: FactorizeJobConfig, info: DataInfo) -> None:
        self.task_map = TaskMap.read(config.task_map) if config.task_map else None
        if self.task_map is not None:  # the map's questions replace the data's labels (if it has any): ignored
            info = replace(info, tasks=self.task_map.task_specs(), one_vs_rest=False)
            if config.data.val_size:  # validation would score the map's tasks against the data's label columns
                raise KFError("--val-size with --task-map: the data's labels are not the map's questions, so there "
                              "is nothing to validate against; leave --val-size out")
        self.unlabelled = isinstance(config, FactorizeJobConfig) and (
            self.task_map is not None or _has_no_labels(info, config))
        super().__init__(config, info)

    def build(self) -> None:
        a = self.config
        if self.task_map is not None:
            self.teacher = create_task_map_teacher(a.teacher.teacher, self.task_map, weights=a.teacher.teacher_weights,
                                                   image_size=a.teacher.image_size)
        else:
            self.teacher = load_teacher(a.teacher, self.info)
        ckn, tsns = build_factor_networks(a.networks, self.info)
        if a.init_ckn_from_teacher:
            init_ckn_from_teacher(ckn, self.teacher)
        if a.freeze_ckn_stages:
            if not isinstance(ckn.backbone, TimmBackbone):
                raise KFError("--freeze-ckn-stages needs a timm CKN (--ckn-arch timm:<name>)")
            self.frozen = freeze_early_stages(ckn.backbone.model, a.freeze_ckn_stages)
        self.model = AssembledNetwork(ckn, tsns)
        self.objective = IMBObjective(self.teacher.feature_widths, ckn.feature_widths, a.objective)

    def loss(self, model, objective, images, targets):
        with torch.no_grad():
            teacher = self.teacher(images)
        out = model(images, return_features=True)
        return objective(logits=out.tsn.logits, aux_logits=out.tsn.aux_logits,
                         targets=None if self.unlabelled else targets,
                         teacher_logits=teacher.logits, ckn_features=out.ckn.features,
                         teacher_features=teacher.features, task_features=out.tsn.z, mu=out.tsn.mu,
                         logvar=out.tsn.logvar)

    def predict(self, model, images):
        return model(images)

    def parameter_counts(self) -> dict[str, int]:
        ckn, tsn_params = count_parameters(self.model.ckn), count_parameters(self.model.tsns)
        return {"ckn": ckn, "tsns": tsn_params, "model": ckn + tsn_params,
                "projectors": count_parameters(self.objective), "teacher": count_parameters(self.teacher)}

    def save(self, output_dir: Path, model: nn.Module, summary: dict[str, Any]) -> None:
        a = self.config
        teacher_summary = read_summary(a.teacher.teacher)
        teacher = {**describe_teacher(self.teacher, str(a.teacher.teacher), self.info.name),
                   "validation": teacher_summary.get("validation")}
        commands = [c for c in (teacher_summary.get("command"), summary["command"]) if c]
        training = {
            "method": "knowledge factorization, InfoMax-Bottleneck objective (Yang, Ye, Wang, ECCV 2022)"
                      + (", unlabelled images: KD + InfoMax + InfoMin, no label loss" if self.unlabelled else ""),
            "task_map": a.task_map, "frozen_ckn_modules": getattr(self, "frozen", []),
            "commands": commands, "config": summary["args"], "objective": asdict(a.objective),
            "steps": summary["steps"], "wall_time_s": summary["wall_time_s"], "world_size": summary["world_size"],
            "validation": summary.get("validation"), "teacher_validation": summary.get("teacher_validation"),
            "validation_vs_teacher": summary.get("validation_vs_teacher"),
        }
        model = model.to("cpu").eval()
        bank = FactorBank.from_modules(model.ckn, model.tsns.unstack(), input_spec=self.info.input_spec,
                                       dataset=self.info.name, teacher=teacher, training=training)
        bank.save_pretrained(output_dir)
        if a.push_to_hub:
            commit = bank.push_to_hub(a.push_to_hub, tag=a.hub_tag, private=a.hub_private or None,
                                      commit_message=f"Factor bank: {self.info.name}, {summary['steps']} steps")
            summary["pushed"] = {"repo_id": a.push_to_hub, "commit": commit, "tag": a.hub_tag}
            print(f"pushed the factor bank to {a.push_to_hub} (commit {commit[:12]}"
                  + (f", tag {a.hub_tag})" if a.hub_tag else ")"))


def init_ckn_from_teacher(ckn: CommonKnowledgeNetwork, teacher: nn.Module) -> None:
    """Start the CKN as the teacher's own trunk (the architectures must be the same)."""
    if isinstance(teacher, TaskMapTeacher):
        teacher = teacher.teacher
    if isinstance(teacher, ExternalTeacher):
        backbone = ckn.backbone
        if not isinstance(backbone, TimmBackbone) or backbone.name != teacher.architecture:
            raise KFError(f"--init-ckn-from-teacher needs the CKN to be the teacher's architecture: pass --ckn-arch "
                          f"timm:{teacher.architecture} (the teacher is {teacher.source})")
        head = classifier_prefix(teacher.network) + "."
        load_weights(backbone.model, teacher.network.state_dict(), "--init-ckn-from-teacher: the teacher's trunk",
                     ignore=(head,))
        return
    if asdict(BackboneConfig.from_dict(ckn.init_config["backbone"])) != \
            asdict(BackboneConfig.from_dict(teacher.init_config["backbone"])):
        raise KFError("--init-ckn-from-teacher needs the CKN's architecture to be the teacher's: teacher "
                      f"{teacher.init_config['backbone']}, CKN {ckn.init_config['backbone']}")
    ckn.backbone.load_state_dict(teacher.backbone.state_dict())


def build_factor_networks(config: FactorNetworksConfig, info: DataInfo
                          ) -> tuple[CommonKnowledgeNetwork, list[TaskSpecificNetwork]]:
    """The CKN and one TSN per task, as the factorize options describe them."""
    a = config
    ckn = CommonKnowledgeNetwork(backbone_config(a.ckn_arch, a.ckn_width, a.ckn_num_stages, a.ckn_stem_stride,
                                                 a.coord_channels, info.input_spec))
    encoder = asdict(EncoderConfig(in_channels=info.input_spec.channels, widths=list(a.tsn_widths),
                                   strides=list(a.tsn_strides), coord_channels=a.coord_channels,
                                   mean=list(info.input_spec.mean), std=list(info.input_spec.std)))
    tsns = [TaskSpecificNetwork(t.to_dict(), encoder, ckn.width, variational=a.variational) for t in info.tasks]
    return ckn, tsns


def _has_no_labels(info: DataInfo, config: FactorizeJobConfig) -> bool:
    """Unlabelled data: a folder read with --unlabelled (or one of loose images), whose targets are empty."""
    source = config.data.source
    from kf_model.data.unlabelled import is_unlabelled_folder

    return bool(source.unlabelled or (source.dataset is None and source.data_dir
                                      and is_unlabelled_folder(source.data_dir)))


def matching_width(parameters: Callable[[int], int], target: int) -> int:
    """The width whose parameter count comes closest to ``target`` (counts grow with the width)."""
    width = 1
    while parameters(width + 1) < target and width < 1024:
        width += 1
    return min((width, width + 1), key=lambda w: abs(parameters(w) - target))


def factorization_parameter_count(config: str, info: DataInfo) -> int:
    """CKN + all TSNs of the factorization described by a factorize.py config file."""
    args = parse_args(FactorizeJob.parser(), ["--config", config], required=())
    ckn, tsns = build_factor_networks(FactorNetworksConfig.from_args(args), info)
    return count_parameters(ckn) + sum(count_parameters(t) for t in tsns)
