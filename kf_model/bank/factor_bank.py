"""FactorBank: the unit that is saved, pushed and pulled.

A bank is a folder (or a Hub repo) holding one CKN and any number of TSNs from the
same factorization::

    factors.json                  manifest: format, tasks, input spec, CKN fingerprint, summaries, metrics
    README.md                     model card
    ckn/config.json, ckn/model.safetensors
    tsn/<task>/config.json, tsn/<task>/model.safetensors
    evaluation/                   optional evaluation outputs (tables, plots)

Pulling ``tasks=[...]`` fetches only the manifest, the CKN and those TSNs.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import HfApi
from huggingface_hub.errors import (
    HfHubHTTPError,
    HFValidationError,
    OfflineModeIsEnabled,
)
from huggingface_hub.utils import validate_repo_id
from PIL import Image

from kf_model.bank.card import render_model_card
from kf_model.bank.files import WEIGHTS_FILE, bank_path, load_module, load_tsn, save_module
from kf_model.bank.hub import download_bank
from kf_model.bank.manifest import (
    CARD_FILE,
    FAMILIARITY_DIR,
    FAMILIARITY_FILES,
    MANIFEST_FILE,
    Manifest,
    check_unique_tasks,
    select_tasks,
    task_list,
    weights_fingerprint,
)
from kf_model.data.preprocess import image_to_tensor
from kf_model.data.specs import InputSpec, TaskSpec
from kf_model.devices import usable_device
from kf_model.errors import (
    BankNotFoundError,
    EmptySelectionError,
    HubUnavailableError,
    IncompatibleFactorsError,
    InvalidArgumentError,
    InvalidConfigError,
    TaskExistsError,
    UnknownTaskError,
    name_list,
)
from kf_model.hub_files import TRANSPORT_ERRORS
from kf_model.limits import MAX_TASKS
from kf_model.models import CommonKnowledgeNetwork, TaskSpecificNetwork, count_parameters
from kf_model.models.factor import AssembledNetwork, FactorNetwork
from kf_model.utils import writable_folder


class FactorBank:
    """One CKN + TSNs from the same factorization, with the manifest that describes them."""

    def __init__(self, manifest: Manifest, ckn: CommonKnowledgeNetwork,
                 tsns: dict[str, TaskSpecificNetwork], source: str | None = None,
                 folder: str | Path | None = None) -> None:
        known = {t.name for t in manifest.tasks}
        for name, tsn in tsns.items():
            if name not in known:
                raise UnknownTaskError(f"TSN {name!r} is not a task of this bank's manifest ({name_list(known)})")
            if tsn.ckn_fingerprint != manifest.ckn_fingerprint:
                raise IncompatibleFactorsError(
                    f"TSN {name!r} was trained with CKN {tsn.ckn_fingerprint[:12] or '?'} but this bank's CKN is "
                    f"{manifest.ckn_fingerprint[:12]}: the factors come from different factorizations"
                )
            if tsn.ckn_width != ckn.width:
                raise IncompatibleFactorsError(f"TSN {name!r} expects CKN width {tsn.ckn_width}, not {ckn.width}")
        self.manifest = manifest
        self.ckn = ckn.eval()
        order = [t.name for t in manifest.tasks]
        self.tsns = {name: tsns[name].eval() for name in order if name in tsns}
        self.source = source
        self.folder = None if folder is None else Path(folder)  # where its files are: a folder or a Hub snapshot

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_modules(cls, ckn: CommonKnowledgeNetwork, tsns: Sequence[TaskSpecificNetwork], *,
                     input_spec: InputSpec, dataset: str | None = None, teacher: dict[str, Any] | None = None,
                     training: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None) -> FactorBank:
        """A bank from freshly trained modules: fingerprints the CKN and stamps it on every TSN."""
        check_unique_tasks([tsn.task.name for tsn in tsns], "the TSNs given")
        ckn = ckn.to("cpu").eval()
        fingerprint = weights_fingerprint(ckn)
        stamped = []
        for tsn in tsns:
            if tsn.ckn_fingerprint and tsn.ckn_fingerprint != fingerprint:
                raise IncompatibleFactorsError(f"TSN {tsn.task.name!r} was trained with another CKN")
            config = dict(tsn.init_config, ckn_fingerprint=fingerprint)
            copy = TaskSpecificNetwork(**config)
            copy.load_state_dict(tsn.state_dict())
            stamped.append(copy.eval())
        manifest = Manifest(tasks=[t.task for t in stamped], input_spec=input_spec, ckn_fingerprint=fingerprint,
                            dataset=dataset, teacher=teacher or {}, training=training or {}, metrics=metrics or {})
        return cls(manifest, ckn, {t.task.name: t for t in stamped})

    @classmethod
    def from_pretrained(cls, repo_or_path: str | Path, tasks: Iterable[str] | str | None = None,
                        revision: str | None = None, *, cache_dir: str | Path | None = None,
                        local_files_only: bool = False, token: str | bool | None = None,
                        device: str | torch.device = "cpu") -> FactorBank:
        """Load a bank from a local folder or a Hub repo id; ``tasks`` limits what is downloaded and loaded."""
        wanted = None if tasks is None else task_list(tasks)
        if not isinstance(repo_or_path, str | os.PathLike) or not str(repo_or_path).strip():
            raise BankNotFoundError(f"from_pretrained needs a bank folder or a Hub repo id, got {repo_or_path!r}")
        device = usable_device(device)  # before any download: "cuda" on a machine without one fails later
        path = Path(repo_or_path)
        try:
            is_folder = path.is_dir()
        except OSError as error:  # e.g. a name longer than the file system allows
            raise BankNotFoundError(f"{str(repo_or_path)[:100]!r} is neither a folder nor a Hub repo id: "
                                    f"{error.strerror}") from None
        if is_folder:
            folder, source = path, str(path)
            manifest = Manifest.read(folder / MANIFEST_FILE) if (folder / MANIFEST_FILE).is_file() else None
            if manifest is None:
                raise BankNotFoundError(f"{folder} is not a factor bank: it has no {MANIFEST_FILE}")
            names = select_tasks(manifest, wanted, source)
        else:
            repo_id = str(repo_or_path)
            try:
                validate_repo_id(repo_id)
            except HFValidationError as error:
                raise BankNotFoundError(f"{repo_id[:100]!r} is neither an existing folder nor a Hub repo id") \
                    from error
            source = repo_id if revision is None else f"{repo_id}@{revision}"
            folder, manifest, names = download_bank(repo_id, wanted, revision, cache_dir, local_files_only, token,
                                                    source)
        ckn = load_module(CommonKnowledgeNetwork, bank_path(folder, "ckn"), f"{source}: ckn")
        adapter = getattr(ckn.backbone, "adapter", None)
        if adapter is not None and adapter.in_channels != manifest.input_spec.channels:
            raise IncompatibleFactorsError(f"{source}: {MANIFEST_FILE} says {manifest.input_spec.channels}-channel "
                                           f"images but the CKN reads {adapter.in_channels}: every image would be "
                                           "refused, and an export would fail")
        tsns = {name: load_tsn(folder, manifest, name, source) for name in names}
        fingerprint = weights_fingerprint(ckn)
        if fingerprint != manifest.ckn_fingerprint:
            raise IncompatibleFactorsError(
                f"{source}: ckn/{WEIGHTS_FILE} has fingerprint {fingerprint[:12]} but {MANIFEST_FILE} records "
                f"{manifest.ckn_fingerprint[:12]}: the CKN was replaced after factorization"
            )
        return cls(manifest, ckn, tsns, source=source, folder=folder).to(device)

    # ------------------------------------------------------------------ use
    @property
    def tasks(self) -> list[TaskSpec]:
        """The loaded tasks, in the manifest's order."""
        return [self.tsns[name].task for name in self.tsns]

    @property
    def available_tasks(self) -> list[TaskSpec]:
        """Every task of the bank, including those not downloaded."""
        return list(self.manifest.tasks)

    @property
    def input_spec(self) -> InputSpec:
        return self.manifest.input_spec

    @property
    def device(self) -> torch.device:
        return next(self.ckn.parameters()).device

    def to(self, device: str | torch.device) -> FactorBank:
        device = usable_device(device)
        self.ckn.to(device)
        for tsn in self.tsns.values():
            tsn.to(device)
        return self

    def _check_tasks(self, names: Iterable[str]) -> list[str]:
        names = task_list(names)
        unknown = [n for n in names if n not in self.tsns]
        if unknown:
            not_loaded = [t.name for t in self.manifest.tasks if t.name not in self.tsns]
            raise UnknownTaskError(
                f"unknown task(s) {name_list(unknown)}; this bank has loaded: {name_list(self.tsns, 12)}"
                + (f" (the bank also holds {name_list(not_loaded)}, not loaded)" if not_loaded else "")
            )
        if not names:
            raise EmptySelectionError(f"choose at least one task of {name_list(self.tsns)}")
        return names

    def assemble(self, tasks: Iterable[str] | str | None = None, *,
                 folded_ckn: torch.nn.Module | None = None) -> AssembledNetwork:
        """A multi-task network for these tasks (default: all loaded), in eval mode, no training needed.
        ``folded_ckn``: ``fold_for_inference(bank.ckn)`` made once, shared by every network assembled with it."""
        names = self._check_tasks(self.tsns if tasks is None else tasks)
        return AssembledNetwork(self.ckn, [self.tsns[n] for n in names], for_inference=True, folded_ckn=folded_ckn)

    def factor(self, task: str) -> FactorNetwork:
        (name,) = self._check_tasks([task])
        return FactorNetwork(self.ckn, self.tsns[name]).eval()

    def preprocess(self, image: Image.Image, *, invert: bool | None = False) -> torch.Tensor:
        """[1, C, H, W] on the bank's device, exactly as the training data looked."""
        return image_to_tensor(image, self.input_spec, invert=invert).to(self.device)

    def subset(self, tasks: Iterable[str] | str) -> FactorBank:
        """The same bank restricted to these tasks (shares modules; the manifest keeps all task specs)."""
        names = self._check_tasks(tasks)
        return FactorBank(self.manifest, self.ckn, {n: self.tsns[n] for n in names}, source=self.source,
                          folder=self.folder)

    def export_onnx(self, tasks: Iterable[str] | str | None, path: str | Path, *, quantize: str | None = None,
                    calibration: torch.Tensor | None = None, features: bool = False) -> Path:
        """The assembled network of ``tasks`` (None: all loaded) as one ONNX file: input ``image``, one output
        per task (see :mod:`kf_model.export.onnx`). ``quantize="int8"``: static QDQ int8, calibrated on
        ``calibration`` (``[N, C, H, W]`` in [0, 1]) or, by default, on held-out training images of the bank's
        dataset (:func:`kf_model.data.calibration.calibration_images`; never the test split)."""
        from kf_model.data.calibration import calibration_images
        from kf_model.export.onnx import export_onnx, writable_file
        from kf_model.export.quantize import check_quantize

        writable_file(path)  # before the network is assembled (a timm trunk takes seconds to fold)
        if quantize is not None and calibration is None:
            check_quantize(quantize, torch.zeros(1, 1, 1, 1))  # a bad value is refused before any data is read
            calibration = calibration_images(self.manifest.dataset, self.input_spec)
        return export_onnx(self.assemble(tasks), path, self.input_spec, ckn_fingerprint=self.manifest.ckn_fingerprint,
                           features=features, quantize=quantize, calibration=calibration)

    def parameter_counts(self) -> dict[str, int]:
        return {"ckn": count_parameters(self.ckn), **{n: count_parameters(t) for n, t in self.tsns.items()}}

    # ------------------------------------------------------------------ save / push
    def save_pretrained(self, folder: str | Path, *, repo_id: str | None = None) -> Path:
        """Write the bank (manifest, card, CKN, loaded TSNs). The manifest lists only what is written.

        Refused before anything is written: the folder this bank was read from (a Hub snapshot's files are links
        into the cache, and a bank loaded with some tasks would be written back with only those), and a folder
        that holds files of the names a bank writes without being a bank (someone's README.md)."""
        folder = self._check_save_folder(folder)
        folder.mkdir(parents=True, exist_ok=True)
        manifest = self.manifest.to_dict()
        manifest["tasks"] = [t.to_dict() for t in self.tasks]
        if not self._copy_familiarity(folder):  # the statistics describe the CKN: any subset of tasks keeps them
            manifest.pop("familiarity", None)  # ... but a manifest never claims statistics that are not there
        (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
        (folder / CARD_FILE).write_text(render_model_card(manifest, repo_id=repo_id))
        save_module(self.ckn, bank_path(folder, "ckn"))
        for name, tsn in self.tsns.items():
            save_module(tsn, bank_path(folder, "tsn", name))
        return folder

    def _check_save_folder(self, folder: str | os.PathLike) -> Path:
        if not isinstance(folder, str | os.PathLike) or not str(folder).strip():
            raise InvalidArgumentError(f"save_pretrained needs a folder path, got {str(folder)[:80]!r}")
        folder = writable_folder(folder, "save_pretrained:")
        if self.folder is not None and folder.resolve() == Path(self.folder).resolve():
            raise InvalidArgumentError(f"{folder} is the folder this bank was read from: save it to another folder "
                                       "(a Hub snapshot's files are links into the download cache)")
        clashes = [name for name in (CARD_FILE, "ckn", "tsn", FAMILIARITY_DIR) if (folder / name).exists()]
        if clashes and not (folder / MANIFEST_FILE).is_file():
            raise InvalidArgumentError(f"{folder} holds {', '.join(clashes)} and is not a factor bank (no "
                                       f"{MANIFEST_FILE}): save to a new folder; nothing was written")
        return folder

    def _copy_familiarity(self, folder: Path) -> bool:
        """Copy ``familiarity/`` (its named files) from the folder or Hub snapshot this bank was loaded from, if
        it has them; True if copied."""
        if not self.manifest.familiarity or self.folder is None:
            return False
        sources = [self.folder / name for name in FAMILIARITY_FILES]
        if not all(path.is_file() for path in sources):
            return False
        for path, name in zip(sources, FAMILIARITY_FILES, strict=True):
            target = folder / name
            if path.resolve() != target.resolve():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)  # a Hub snapshot holds links into the cache: copy the content
        return True

    def push_to_hub(self, repo_id: str, *, commit_message: str | None = None, tag: str | None = None,
                    private: bool | None = None, token: str | None = None, revision: str | None = None,
                    extra_files: Path | None = None) -> str:
        """Upload the bank as one commit (replacing an older bank's files), optionally tag it; returns the commit sha.

        ``extra_files``: a folder whose content is uploaded too (e.g. ``evaluation/``).
        """
        self._check_push(repo_id, extra_files)
        api = HfApi(token=token)
        with tempfile.TemporaryDirectory() as tmp:
            staging = self.save_pretrained(Path(tmp) / "bank", repo_id=repo_id)
            if extra_files is not None:
                shutil.copytree(extra_files, staging / Path(extra_files).name, dirs_exist_ok=True)
            try:
                api.create_repo(repo_id, private=private, exist_ok=True)
                commit = api.upload_folder(
                    repo_id=repo_id, folder_path=staging, revision=revision,
                    commit_message=commit_message or f"Upload factor bank ({len(self.tsns)} tasks)",
                    delete_patterns=[MANIFEST_FILE, CARD_FILE, "ckn/*", "tsn/*", "evaluation/*",
                                     f"{FAMILIARITY_DIR}/*"],
                )
                if tag:
                    api.create_tag(repo_id, tag=tag, revision=commit.oid)
            except HfHubHTTPError as error:
                raise HubUnavailableError(f"pushing to {repo_id} failed: {error}") from error
            except (*TRANSPORT_ERRORS, OfflineModeIsEnabled) as error:
                raise HubUnavailableError(f"cannot reach the Hub to push {repo_id}: {error}") from error
        return commit.oid

    def _check_push(self, repo_id: object, extra_files: Path | None) -> None:
        """Before anything is staged: a valid repo id, an ``extra_files`` folder that exists, and, pushed back to the
        repo it was pulled from, every task of its manifest loaded (the upload replaces the repo's tsn/ whole: a bank
        pulled with some tasks would delete the others there). A subset pushed to another repo is that repo's bank."""
        try:
            validate_repo_id(repo_id if isinstance(repo_id, str) else "")
        except HFValidationError:
            raise InvalidArgumentError(f"push_to_hub: {str(repo_id)[:100]!r} is not a Hub repo id "
                                       "('owner/name')") from None
        if extra_files is not None and not Path(extra_files).is_dir():
            raise InvalidArgumentError(f"push_to_hub: extra_files {extra_files} is not a folder")
        missing = [t.name for t in self.manifest.tasks if t.name not in self.tsns]
        if missing and str(self.source or "").split("@")[0] == repo_id:
            raise InvalidArgumentError(
                f"this bank was loaded without {name_list(missing)}: pushing it would delete their factors from "
                f"{repo_id}; load the whole bank (from_pretrained(..., tasks=None)) before pushing")

    # ------------------------------------------------------------------ grow
    def add_task(self, spec: TaskSpec, tsn: TaskSpecificNetwork, *, replace: bool = False) -> FactorBank:
        """Add (or with ``replace=True`` swap) the factor of a new task, trained against this bank's frozen CKN.

        Nothing that is already in the bank changes: old tasks keep bit-identical outputs. Refused: a TSN
        trained with another CKN, a bank whose CKN weights changed since, a task name the bank already has.
        ``kf_model.training.add_task.train_new_task`` trains such a TSN; ``save_pretrained`` / ``push_to_hub`` then
        write the grown bank. Returns the bank itself.
        """
        if not isinstance(spec, TaskSpec) or not isinstance(tsn, TaskSpecificNetwork):
            raise InvalidArgumentError(f"add_task(spec, tsn) takes a TaskSpec and the TaskSpecificNetwork that "
                                       f"train_new_task made for it, got {type(spec).__name__} and "
                                       f"{type(tsn).__name__}")
        if tsn.task != spec:
            raise IncompatibleFactorsError(f"the TSN solves task {tsn.task.name!r} ({tsn.task.num_classes} classes), "
                                           f"not {spec.name!r} ({spec.num_classes} classes)")
        names = [t.name for t in self.manifest.tasks]
        if spec.name in names and not replace:
            raise TaskExistsError(f"this bank already has a task {spec.name!r}; pass replace=True (--replace) to "
                                  "swap its factor, or choose another name")
        recorded = self.manifest.ckn_fingerprint
        if tsn.ckn_fingerprint != recorded:
            raise IncompatibleFactorsError(
                f"TSN {spec.name!r} was trained with CKN {tsn.ckn_fingerprint[:12] or '(none recorded)'} but this "
                f"bank's CKN is {recorded[:12]}: train it against this bank (kf_model.training.add_task.train_new_task)"
            )
        current = weights_fingerprint(self.ckn)
        if current != recorded:
            raise IncompatibleFactorsError(
                f"this bank's CKN weights changed since factorization (fingerprint {current[:12]}, recorded "
                f"{recorded[:12]}): its factors, old and new, would no longer be the ones that were trained"
            )
        if tsn.ckn_width != self.ckn.width:
            raise IncompatibleFactorsError(f"TSN {spec.name!r} expects CKN width {tsn.ckn_width}, not {self.ckn.width}")
        tasks = list(self.manifest.tasks)
        if spec.name in names:
            tasks[names.index(spec.name)] = spec
        else:
            tasks.append(spec)
        check_unique_tasks([t.name for t in tasks], "the grown bank")  # "Shape" next to "shape": one folder
        if len(tasks) > MAX_TASKS:
            raise InvalidConfigError(f"a bank holds at most {MAX_TASKS:,} tasks")
        self.manifest.tasks = tasks
        self.tsns[spec.name] = tsn.to(self.device).eval()
        self.tsns = {t.name: self.tsns[t.name] for t in tasks if t.name in self.tsns}
        return self

    def __repr__(self) -> str:
        return f"FactorBank(source={self.source!r}, tasks={list(self.tsns)}, ckn={self.manifest.ckn_fingerprint[:12]})"
