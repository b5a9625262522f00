"""The resumable experiment runner: finished runs are skipped, an interrupted training resumes from its
checkpoint, and the assembled JSON comes from finished runs only and names the missing ones."""

from __future__ import annotations

import json
import time
from pathlib import Path
from unittest.mock import patch

import pytest

from kf_model.errors import KFError
from kf_model.experiments.claims import (
    assemble_disentanglement,
    assemble_transfer,
    disentanglement_runs,
    run_resumable,
    sweep_filter,
    sweep_stages,
    transfer_runs,
)
from kf_model.experiments.disentanglement import Budget
from kf_model.experiments.full_figures import plot_importance
from kf_model.experiments.full_reports import (
    cost_table,
    disentanglement_full_table,
    leakage_full_table,
    stages_table,
    transfer_full_table,
)
from kf_model.experiments.keep import keep, restore
from kf_model.experiments.plans import TEACHER, group_bounds, grouped_importance, stage_argv, stage_folder, stage_run
from kf_model.experiments.runs import LOCK_SUFFIX, Run, RunBook, git_commit, provenance
from kf_model.experiments.stages import SETTINGS, Scale, SubsetTeacherJob
from kf_model.training import run
from kf_model.training.checkpoints import existing_checkpoints

TINY = Scale("tiny", train_limit=64, test_limit=32, teacher_width=4, ckn_width=4, num_stages=3, tsn_widths=(4, 4),
             tsn_strides=(4, 4), stage_steps=4, transfer_steps=2, transfer_lr=1e-2, batch_size=16, seeds=(0, 1),
             budget=Budget(num_train=60, num_test=30, intervention_train=6, intervention_eval=6, batch_size=8,
                           gbt_estimators=2))


def test_finished_runs_are_skipped_and_carry_their_provenance(tmp_path: Path) -> None:
    calls: list[str] = []

    def work(name: str) -> Run:
        return Run(name, "score", lambda: calls.append(name) or {"value": len(calls)})

    book = RunBook(tmp_path, "python train/experiments.py sweep --scale full", commit="abc123")
    assert book.execute([work("a"), work("b")], log=lambda _: None) == ["a", "b"]
    again = RunBook(tmp_path, "the same command rerun", commit="def456")
    assert again.execute([work("a"), work("b"), work("c")], log=lambda _: None) == ["c"]
    assert calls == ["a", "b", "c"]
    record = again.record("a")
    assert record["commit"] == "abc123" and record["command"].endswith("--scale full")
    assert record["result"] == {"value": 1} and record["seconds"] >= 0 and record["kind"] == "score"
    finished, missing = again.collect(["a", "b", "c", "d"])
    summary = provenance(finished, missing, 4)
    assert summary["missing_runs"] == ["d"] and not summary["complete"]
    assert summary["commits"] == ["abc123", "def456"] and summary["runs"]["c"]["commit"] == "def456"


def test_the_commit_of_a_checkout_or_of_a_snapshot(tmp_path: Path) -> None:
    commit = git_commit()
    assert len(commit.removesuffix("-dirty")) == 40
    (tmp_path / "COMMIT").write_text("0123abcd\n")  # git archive HEAD | tar -x, plus the commit it was made from
    assert git_commit(tmp_path) == "0123abcd"
    assert git_commit(tmp_path / "missing") == "unknown"


def test_a_failed_run_leaves_no_result_and_runs_again(tmp_path: Path) -> None:
    def broken() -> dict:
        raise RuntimeError("killed")

    book = RunBook(tmp_path, "cmd", commit="x")
    with pytest.raises(RuntimeError):
        book.execute([Run("ok", "score", lambda: {}), Run("late", "score", broken)], log=lambda _: None)
    assert book.record("ok") is not None and book.record("late") is None
    (tmp_path / "results" / "late.json").write_text("{ half written")  # a damaged file counts as not finished
    assert book.execute([Run("ok", "score", lambda: {}), Run("late", "score", lambda: {"v": 1})],
                        log=lambda _: None) == ["late"]
    with pytest.raises(KFError, match="slug"):
        Run("../escape", "score", lambda: {})
    with pytest.raises(KFError, match="distinct"):
        book.execute([Run("ok", "score", lambda: {}), Run("ok", "score", lambda: {})], log=lambda _: None)


def test_a_run_held_by_another_process_is_waited_for_and_not_run_twice(tmp_path: Path) -> None:
    """Two experiments sharing a folder run side by side: a run another live process holds is waited for, and
    skipped once that process has finished it; a lock left by a dead process is taken over; none is left behind."""
    import subprocess
    import sys
    import threading

    book = RunBook(tmp_path, "cmd", commit="x")
    lock = tmp_path / "results" / f"shared{LOCK_SUFFIX}"
    lock.parent.mkdir(parents=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    calls: list[str] = []
    lines: list[str] = []
    try:
        lock.write_text(str(other.pid))  # a live process runs "shared"

        def the_other_finishes() -> None:
            time.sleep(0.3)
            RunBook(tmp_path, "other cmd", commit="y").path("shared").write_text(json.dumps(
                {"name": "shared", "kind": "score", "commit": "y", "command": "other cmd", "seconds": 1.0,
                 "finished": "now", "result": {}}))
            lock.unlink()

        helper = threading.Thread(target=the_other_finishes)
        helper.start()
        with patch("kf_model.experiments.runs.LOCK_WAIT_S", 0.05):
            ran = book.execute([Run("own", "score", lambda: calls.append("own") or {}),
                                Run("shared", "score", lambda: calls.append("shared") or {})], log=lines.append)
        helper.join()
    finally:
        other.kill()
        other.wait()
    assert ran == ["own"] and calls == ["own"]
    assert any(f"pid {other.pid}" in line for line in lines)
    assert book.record("shared")["commit"] == "y"  # the other process's result stands
    (tmp_path / "results" / f"late{LOCK_SUFFIX}").write_text(str(other.pid))  # left by a process now dead
    assert book.execute([Run("late", "score", lambda: {})], log=lambda _: None) == ["late"]
    assert not list((tmp_path / "results").glob(f"*{LOCK_SUFFIX}"))  # released, each of them


def test_an_interrupted_training_stage_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    setting = SETTINGS["dsprites"]
    argv = stage_argv(TEACHER, TINY, setting, tmp_path)
    assert argv[-6:-2] == ["--checkpoint-every", "250", "--resume", "latest"]
    run(SubsetTeacherJob, [*argv, "--stop-after-steps", "2"])  # as if the session ended after 2 of 4 steps
    folder = stage_folder(tmp_path, TEACHER.name)
    assert len(existing_checkpoints(folder)) == 1 and not (folder / "training.json").exists()
    book = RunBook(tmp_path, "cmd", commit="x")
    book.execute([stage_run(TEACHER, TINY, setting, tmp_path)], log=lambda _: None)
    result = book.record("train-teacher-all")["result"]
    summary = json.loads((folder / "training.json").read_text())
    assert summary["resumed_from"] is not None and summary["steps"] == 4
    assert [json.loads(line)["step"] for line in (folder / "log.jsonl").read_text().splitlines()] == [2, 4]
    assert result["steps"] == 4 and set(result["validation"]["accuracy"]) == set(setting.base_tasks + setting.held_out)


def test_kept_runs_continue_on_a_fresh_machine(tmp_path: Path) -> None:
    """A session's machine is fresh: the finished results and the interrupted stage's newest checkpoint, kept in
    a committed folder and restored into an empty run folder, let the same command finish the stage."""
    setting, first, fresh, kept = SETTINGS["dsprites"], tmp_path / "first", tmp_path / "fresh", tmp_path / "kept"
    RunBook(first, "cmd", commit="x").execute([Run("score-a", "score", lambda: {"a": 1})], log=lambda _: None)
    run(SubsetTeacherJob, [*stage_argv(TEACHER, TINY, setting, first), "--stop-after-steps", "2"])
    (first / "results" / f"score-a{LOCK_SUFFIX}").write_text("123")  # a lock is never kept
    counts = keep(first, kept)
    assert counts["files"] > 2 and not (kept / "results" / f"score-a{LOCK_SUFFIX}").exists()
    assert len(existing_checkpoints(stage_folder(kept, TEACHER.name))) == 1
    assert restore(kept, fresh) == counts["files"]
    book = RunBook(fresh, "cmd", commit="x")
    ran = book.execute([Run("score-a", "score", lambda: {"a": 2}), stage_run(TEACHER, TINY, setting, fresh)],
                       log=lambda _: None)
    assert ran == ["train-teacher-all"] and book.record("score-a")["result"] == {"a": 1}
    summary = json.loads((stage_folder(fresh, TEACHER.name) / "training.json").read_text())
    assert summary["resumed_from"] is not None and summary["steps"] == 4
    keep(fresh, kept)  # finished now: the stage is kept without its checkpoints
    assert (stage_folder(kept, TEACHER.name) / "training.json").is_file()
    assert not existing_checkpoints(stage_folder(kept, TEACHER.name))
    assert keep(tmp_path, tmp_path.parent / f"{tmp_path.name}-kept")["files"] > counts["files"]  # folders above books
    with pytest.raises(KFError, match="no results/ folder"):
        keep(tmp_path / "nothing", kept)
    with pytest.raises(KFError, match="must not hold one another"):
        keep(fresh, fresh / "kept")


def test_keep_never_replaces_a_folder_that_is_not_an_earlier_keep(tmp_path: Path) -> None:
    """``keep`` replaces --kept whole: a mistyped one (someone's folder, a parent of the runs, a file) is refused
    and left as it was."""
    runs, precious = tmp_path / "runs", tmp_path / "precious"
    RunBook(runs, "cmd", commit="x").execute([Run("score-a", "score", lambda: {"a": 1})], log=lambda _: None)
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    (tmp_path / "afile").write_text("x")
    for kept, message in ((precious, "holds files that are not kept experiment runs"),
                          (tmp_path, "must not hold one another"), (tmp_path / "afile", "is not a folder")):
        with pytest.raises(KFError, match=message):
            keep(runs, kept)
    (tmp_path / "other.keeping").mkdir()
    (tmp_path / "other.keeping" / "notes.txt").write_text("mine")
    with pytest.raises(KFError, match=r"other\.keeping holds files"):
        keep(runs, tmp_path / "other")
    assert (precious / "thesis.txt").read_text() == "years of work" and (tmp_path / "afile").read_text() == "x"
    assert (tmp_path / "other.keeping" / "notes.txt").is_file() and not (tmp_path / "afile.keeping").exists()
    assert keep(runs, tmp_path / "kept")["files"] == 1 and keep(runs, tmp_path / "kept")["files"] == 1  # again


def test_disentanglement_json_is_assembled_from_finished_runs_only(tmp_path: Path) -> None:
    command = "python train/experiments.py disentanglement --scale tiny"
    work = tmp_path / "tiny" / "dsprites"
    runs = disentanglement_runs(TINY, work)
    names = [r.name for r in runs]
    assert names[:3] == ["train-teacher-all", "train-bank-beta0.001-batch-s0", "score-tsn-s0"]
    assert "score-tsn-s1" in names and "score-tsn_latent_10d" in names
    book = RunBook(work, command, commit="abc")
    book.execute(runs[:7], log=lambda _: None)  # stopped after the KD student's score
    partial = assemble_disentanglement(TINY, book, runs)
    assert not partial["complete"] and partial["missing_runs"] == names[7:]
    assert set(partial["representations"]) == {"teacher", "kd_student", "ckn", "tsn_concat"}
    tsn = partial["representations"]["tsn_concat"]
    assert tsn["groups"] == [f"TSN {t}" for t in ("shape", "scale", "orientation", "pos_x", "pos_y")]
    assert tsn["dci_disentanglement"]["n"] == 1 and len(tsn["importance_by_group"]) == 5
    assert tsn["leakage"]["own_excess"]["n"] == 1 and len(tsn["leakage"]["accuracy"]) == 5

    path = run_resumable("disentanglement", TINY, tmp_path, command, log=lambda _: None)
    assembled = json.loads(path.read_text())
    assert assembled["complete"] and assembled["command"] == command
    assert assembled["representations"]["tsn_concat"]["dci_disentanglement"]["n"] == 2
    assert assembled["representations"]["tsn_latent_10d"]["code_dims"] == 10
    assert assembled["cost_minutes"]["train"]["runs"] == 5
    table = disentanglement_full_table(assembled)
    assert table.count("\n| ") == 5 and "| tsn_concat | 20 | 2 |" in table and "Complete: 12 of 12 runs" in table
    partial_table = disentanglement_full_table({**partial, "command": command})
    assert "**Partial**: 7 of 12 runs finished; still to run: `train-bank-beta0.001-batch-s0-w4-2`" in partial_table
    assert leakage_full_table(assembled).count("\n| ") == 5
    stages = stages_table(assembled)
    assert stages.count("\n| ") == 5 and "| pos_y | mean |" in stages.splitlines()[0]
    assert "| disentanglement | train | 5 / 5 |" in cost_table({"disentanglement": assembled})
    assert plot_importance(assembled, tmp_path / "importance.png").stat().st_size > 0


def test_grouped_importance_sums_each_factor_over_a_group() -> None:
    importance = [[0.5, 0.0], [0.5, 0.0], [0.0, 1.0], [0.0, 0.0]]
    assert group_bounds(4, 2) == [(0, 2), (2, 4)] and group_bounds(5, 2) == [(0, 2), (2, 5)]
    assert grouped_importance(importance, group_bounds(4, 2)) == [[1.0, 0.0], [0.0, 1.0]]


def test_transfer_json_marks_what_is_missing(tmp_path: Path) -> None:
    setting = SETTINGS["dsprites"]
    runs = transfer_runs(setting, TINY, tmp_path)
    first = [r for r in runs if r.kind != "transfer"] + [r for r in runs if r.kind == "transfer"][:5]
    book = RunBook(tmp_path, "python train/experiments.py transfer --scale tiny", commit="abc")
    book.execute(first, log=lambda _: None)  # the stages, the ceilings and seed 0 of pos_x at 1 % of the labels
    results = {**assemble_transfer(setting, TINY, book, runs), "command": "cmd"}
    row = results["tasks"]["pos_x"]["fractions"]["0.01"]
    assert row["labels"] == 2 and all(row[m]["n"] == 1 for m in results["methods"])
    assert not results["tasks"]["pos_y"]["fractions"]["0.01"] and 0 <= results["tasks"]["pos_y"]["ceiling"] <= 1
    assert len(results["missing_runs"]) == len(runs) - len(first) and not results["complete"]
    table = transfer_full_table(results)
    assert table.count("\n| ") == 1 and "**Partial**" in table
    record = book.record("transfer-pos_x-0.01-scratch-s0")["result"]
    assert record["train_images"] == 2 and record["steps"] == TINY.transfer_steps
    assert record["parameters"]["trained"] == record["parameters"]["model"]  # from scratch: every weight trains
    probe = book.record("transfer-pos_x-0.01-ckn_probe-s0")["result"]["parameters"]
    assert probe["trained"] < probe["model"]  # the CKN stays frozen


def test_plans_order_and_names(tmp_path: Path) -> None:
    stages = [s.name for s in sweep_stages(TINY)]
    assert stages[:4] == ["bank-beta0.001-batch-s0", "bank-beta0.001-batch-s1", "bank-beta0-batch-s0",
                          "bank-beta0-batch-s1"]
    assert len(stages) == len(set(stages)) == 4 + 10 - 2  # the seeded points are not trained twice
    runs = transfer_runs(SETTINGS["dsprites"], TINY, tmp_path)
    transfer = [r.name for r in runs if r.kind == "transfer"]
    assert len(transfer) == 2 * 3 * 2 * 5 and transfer[0] == "transfer-pos_x-0.01-kf_tsn-s0"
    assert transfer[-1] == "transfer-pos_y-1-kf_tsn_wide-s1"
    keep = sweep_filter([0.0, 1e-3], ["batch"])
    assert keep("train-teacher-all") and keep("train-bank-beta0-batch-s1")
    assert keep("sweep-score-bank-beta0.001-batch-s0")
    assert not keep("train-bank-beta0.1-batch-s0") and not keep("sweep-score-bank-beta0-vib-s0")


def test_the_cost_probe_prices_every_planned_run_once(tmp_path: Path) -> None:
    from kf_model.experiments.probe import probe_table, project, stage_kind

    assert [stage_kind(n) for n in ("train-teacher-base", "train-kd-student", "train-bank-beta0-vib-s0",
                                    "train-bank-beta0.001-batch-s1")] == ["teacher", "distill", "factorize_vib",
                                                                          "factorize"]
    methods = {"kf_tsn": 0.1, "teacher_tsn": 0.1, "ckn_probe": 0.05, "scratch": 0.3, "kf_tsn_wide": 0.2}
    seconds = {"dsprites": {"stages": {"teacher": 0.3, "factorize": 0.6, "factorize_vib": 0.9, "distill": 0.6},
                            "transfer": methods},
               "fashion-mnist": {"stages": {"teacher": 0.1, "factorize": 0.2}, "transfer": methods}}
    table = project(seconds, tmp_path)
    claim_b = table["disentanglement dsprites"]
    assert (claim_b["train_runs"], claim_b["score_runs"]) == (6, 9)
    assert claim_b["train"] == round((0.3 + 0.6 * 4 + 0.6) * 2000 / 60, 1)  # teacher, 4 banks, KD student
    assert table["sweep dsprites"]["train_runs"] == 14 - 3  # the reference-beta seeds are claim b's
    assert table["init_ckn dsprites"]["train_runs"] == 1 and table["init_ckn fashion-mnist"]["train_runs"] == 1
    assert table["transfer dsprites"]["train_runs"] == 2 and table["transfer dsprites"]["transfer_runs"] == 90
    fashion = table["transfer fashion-mnist"]
    assert fashion["train_runs"] == 4 and fashion["transfer_runs"] == 135
    text = probe_table({"projected_minutes": table, "seconds_per_step": seconds, "probe_steps": 30,
                        "command": "python train/experiments.py probe", "commit": "abc"})
    assert text.count("\n| ") == len(table) and "hours on this machine" in text


def test_init_ckn_table_compares_with_and_without_on_the_carve_out() -> None:
    from kf_model.experiments.full_reports import init_ckn_table

    report = {"mean_accuracy": 90.0, "per_task": {"shape": 100.0, "pos_x": 80.0}}
    results = {"dataset": "dsprites", "split": "validation carve-out", "complete": False, "finished_runs": 2,
               "planned_runs": 3, "missing_runs": ["train-bank-beta0.001-batch-s0-noinit"], "commits": ["a" * 40],
               "command": "python train/experiments.py init_ckn --scale full",
               "stages": {"teacher-all": report, "bank-beta0.001-batch-s0": report}}
    table = init_ckn_table(results)
    assert "| with --init-ckn-from-teacher | 100.00 | 80.00 | 90.00 |" in table and "**Partial**" in table
    assert "`train-bank-beta0.001-batch-s0-noinit`" in table


def test_the_full_scale_figures_leave_out_what_has_not_finished(tmp_path: Path) -> None:
    from kf_model.experiments.full_figures import plot_sweep_full, plot_transfer_full, transfer_panels

    def spread(*values: float) -> dict:
        return {"values": list(values), "mean": sum(values) / len(values), "std": 0.0, "n": len(values)}

    transfer = {"dataset": "dsprites", "methods": ["kf_tsn", "scratch"], "tasks": {
        "pos_x": {"ceiling": 0.99, "chance": 0.04, "fractions": {"0.01": {"labels": 600, "kf_tsn": spread(0.2, 0.3)},
                                                                   "1": {"labels": 60000}}},
        "pos_y": {"ceiling": 0.99, "chance": 0.04, "fractions": {"0.01": {"labels": 600}}}}}
    assert [task for _, task, _, _ in transfer_panels([transfer])] == ["pos_x"]  # pos_y: nothing finished
    assert plot_transfer_full([transfer], tmp_path / "transfer-full.png").stat().st_size > 0
    transfer["tasks"]["pos_x"]["fractions"]["0.01"].pop("kf_tsn")
    assert plot_transfer_full([transfer], tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()
    point = {"beta": 0.0, "infomin": "batch", "mean_accuracy": spread(0.91),
             "pooled": {"dci_disentanglement": spread(0.48)}, "z": {"dci_disentanglement": spread(0.7, 0.72)}}
    sweep = {"points": [point, {**point, "beta": 0.001}], "teacher": {"mean_accuracy": 0.911}}
    assert plot_sweep_full(sweep, tmp_path / "sweep.png").stat().st_size > 0
    assert plot_sweep_full({"points": []}, tmp_path / "empty.png") is None
