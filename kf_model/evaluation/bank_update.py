"""An evaluated bank: metrics into ``factors.json``, a fresh model card, the report into ``evaluation/``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from kf_model.bank import CARD_FILE, EVALUATION_DIR, MANIFEST_FILE, Manifest
from kf_model.bank.card import render_model_card
from kf_model.errors import BankNotFoundError, IncompatibleFactorsError
from kf_model.evaluation.report import RESULTS_JSON, RESULTS_MD
from kf_model.evaluation.scores import jsonable


def bank_metrics(results: dict[str, Any]) -> dict[str, Any]:
    """The ``metrics`` entry of ``factors.json``: per-task accuracies and a flat summary."""
    acc = results["accuracy"]
    kd = acc.get("kd_student") or {}
    tasks = {n: {"accuracy": acc["factor"][n], "teacher_accuracy": acc["teacher"][n],
                 "kd_accuracy": kd.get(n)} for n in acc["factor"]}
    ds = results["dataset"]
    summary: dict[str, Any] = {
        "dataset": ds.get("name"), "split": ds.get("split"), "samples": results["samples"]["evaluated"],
        "mean_factor_accuracy": acc["mean"]["factor"], "mean_teacher_accuracy": acc["mean"]["teacher"],
        "mean_kd_accuracy": acc["mean"].get("kd_student"),
        "assembly_max_abs_diff": results["exactness"]["max_abs_diff_overall"],
    }
    ovr = results.get("one_vs_rest")
    if ovr:
        summary["teacher_kway_accuracy"] = ovr["teacher_kway_accuracy"]
        summary["kd_kway_accuracy"] = ovr.get("kd_student_kway_accuracy")
        summary["assembled_argmax_kway_accuracy"] = ovr.get("assembled_argmax_kway_accuracy")
    leak = results["leakage"].get("summary", {})
    summary["leakage_tsn_off_diagonal_excess"] = leak.get("tsn_off_diagonal_excess")
    summary["leakage_teacher_excess"] = leak.get("teacher_excess")
    dis = results["disentanglement"]
    if "tsn" in dis:
        summary["dci_disentanglement_tsn"] = dis["tsn"]["dci_disentanglement"]
        summary["dci_disentanglement_teacher"] = dis["teacher"]["dci_disentanglement"]
    targets = results["targets"]
    summary["targets_passed"] = f"{targets['num_passed']}/{targets['num_checked']}"
    summary["details"] = f"{EVALUATION_DIR}/{RESULTS_MD}"
    return jsonable({"tasks": tasks, "summary": summary})


_REPO_IN_CARD = re.compile(r'FactorBank\.from_pretrained\("([^"]+)"')


def update_bank(bank_dir: str | Path, results: dict[str, Any], report_dir: str | Path | None = None) -> Path:
    """Record the metrics in ``<bank>/factors.json``, re-render ``README.md`` and copy the report files
    (results.json/md, PNGs) from ``report_dir`` into ``<bank>/evaluation/``. Returns the manifest path.

    The rest of the manifest is kept as it is; the card keeps the repo id it was rendered with, if any.
    Results of another factorization (CKN fingerprint differs) are refused.
    """
    bank = Path(bank_dir)
    manifest_path = bank / MANIFEST_FILE
    if not manifest_path.is_file():
        raise BankNotFoundError(f"{bank} is not a local factor bank folder: it has no {MANIFEST_FILE}")
    recorded = Manifest.read(manifest_path)  # validates format and content
    evaluated = results.get("models", {}).get("bank", {})
    if evaluated.get("ckn_fingerprint") != recorded.ckn_fingerprint:
        raise IncompatibleFactorsError(
            f"these results are of the bank with CKN {str(evaluated.get('ckn_fingerprint'))[:12]}, not of {bank} "
            f"(CKN {recorded.ckn_fingerprint[:12]}): refusing to record them there"
        )
    manifest = json.loads(manifest_path.read_text())
    manifest["metrics"] = bank_metrics(results)
    if report_dir is None:
        manifest["metrics"]["summary"].pop("details", None)
    card_path = bank / CARD_FILE
    repo_id = None
    if card_path.is_file():
        found = _REPO_IN_CARD.search(card_path.read_text())
        if found and found.group(1) != "path/to/this/folder":
            repo_id = found.group(1)
    manifest_path.write_text(json.dumps(manifest, indent=2))
    card_path.write_text(render_model_card(manifest, repo_id=repo_id))
    if report_dir is not None:
        source, target = Path(report_dir), bank / EVALUATION_DIR
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted(source.iterdir()):
            if path.is_file() and (path.name in (RESULTS_JSON, RESULTS_MD) or path.suffix == ".png"):
                if path.resolve() != (target / path.name).resolve():
                    shutil.copy2(path, target / path.name)
    return manifest_path
