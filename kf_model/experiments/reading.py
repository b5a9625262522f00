"""The README's reading of claims (b) and (c), written from the full-scale JSON by ``python train/experiments.py
report --output docs/experiments --readme README.md``, so that no figure of it is typed by hand.

Each sentence says what was measured and how many seeds it rests on; a comparison is called a difference only
when the two means are further apart than twice the larger of their seeds' standard deviations and both rest on
at least two seeds; otherwise it is reported as within the seeds' spread (or as one seed's reading).
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from kf_model.errors import KFError
from kf_model.experiments.full_reports import run_kind

READING_START = "<!-- claims reading:"
READING_END = "<!-- end of claims reading -->"
DATASET_NAMES = {"dsprites": "dSprites", "fashion-mnist": "Fashion-MNIST"}
SOLVED_FACTORS = ("shape", "scale", "pos_x", "pos_y")  # orientation is capped by the shapes' symmetries


def own_group_share(importance: Sequence[Sequence[float]]) -> float:
    """Mean over factors of the share of a factor's DCI importance held by its own group of dims (group i belongs
    to factor i, as TSN i to task i); the columns of ``importance`` (one per factor) sum to 1 over the groups."""
    matrix = np.asarray(importance, dtype=float)
    return float(np.trace(matrix) / matrix.shape[1])


def best_matched_share(importance: Sequence[Sequence[float]]) -> float:
    """:func:`own_group_share` for the one-to-one pairing of groups and factors that maximises it: the fair
    counterpart for equal slices of a trunk's code, whose slices belong to no factor."""
    matrix = np.asarray(importance, dtype=float)
    rows, cols = linear_sum_assignment(-matrix)
    return float(matrix[rows, cols].sum() / matrix.shape[1])


def verdict(a: dict[str, Any], b: dict[str, Any]) -> str:
    """"ahead", "behind" or "level" for mean ± std ``a`` against ``b`` (see the module's rule); "open" while
    either rests on one seed."""
    if min(a["n"], b["n"]) < 2:
        return "open"
    if abs(a["mean"] - b["mean"]) <= 2 * max(a["std"], b["std"]):
        return "level"
    return "ahead" if a["mean"] > b["mean"] else "behind"


def _pct(spread: dict[str, Any]) -> str:
    text = f"{100 * spread['mean']:.1f} %"
    return text if spread["n"] == 1 else f"{text} ± {100 * spread['std']:.1f}"


def _seeds(n: int) -> str:
    return "one seed" if n == 1 else f"{n} seeds"


def status(disentanglement: dict[str, Any], transfers: dict[str, dict[str, Any]]) -> str:
    """The scale reached (the full-scale teacher on the validation carve-out) and what has finished."""
    teacher = disentanglement["stages"]["teacher-all"]["per_task"]
    solved = min(teacher[name] for name in SOLVED_FACTORS)
    done = [f"{disentanglement['finished_runs']} of claim b's {disentanglement['planned_runs']} runs"]
    done += [f"{t['finished_runs']} of the {DATASET_NAMES.get(dataset, dataset)} transfer's {t['planned_runs']}"
             for dataset, t in transfers.items()]
    return (f"**Scale.** The full-scale teacher of the five dSprites tasks solves shape, scale and both positions "
            f"on the validation carve-out (at least {solved:.2f} %; orientation {teacher['orientation']:.2f} %, "
            f"capped by the shapes' symmetries), as the bundled bank's teacher does, so both claims are tested on "
            f"networks that solve their tasks. Finished: {', '.join(done[:-1])} and {done[-1]}.")


TRUNKS = {"teacher": "the teacher's code", "kd_student": "the KD student's", "ckn": "the CKN's"}
SHORT = {"teacher": "teacher", "kd_student": "KD student", "ckn": "CKN"}


def claim_b(results: dict[str, Any]) -> str:
    """DCI of the TSN codes against the trunks', the per-TSN importance view, and leakage."""
    reps = results["representations"]
    if "tsn_concat" not in reps or "teacher" not in reps:
        return "*Claim b*: the TSN codes have not been scored yet."
    dci = {name: reps[name]["dci_disentanglement"] for name in reps}
    trunks = [name for name in TRUNKS if name in reps]
    own = own_group_share(reps["tsn_concat"]["importance_by_group"])
    matched = {name: best_matched_share(reps[name]["importance_by_group"]) for name in trunks}
    tsn_leak, teacher_leak = reps["tsn_concat"]["leakage"], reps["teacher"]["leakage"]
    lower = dci["tsn_concat"]["mean"] < min(dci[name]["mean"] for name in trunks)
    ckn_seeds = dci["ckn"]["n"] if "ckn" in dci else 0
    text = (f"*Claim b* (dSprites, the recipe's scale; TSNs: {_seeds(dci['tsn_concat']['n'])}, CKN: "
            f"{_seeds(ckn_seeds)}). Per dimension, the concatenated TSN codes score "
            f"{'a lower' if lower else 'a higher'} DCI disentanglement ({dci['tsn_concat']['mean']:.3f}) than "
            + ", ".join(f"{TRUNKS[name]} ({dci[name]['mean']:.3f})" for name in trunks))
    if "tsn_latent_10d" in dci:
        text += (f"; TSNs that end in 2 channels (the reference's 10-d latent) score "
                 f"{dci['tsn_latent_10d']['mean']:.3f}")
    text += (f". Per TSN, the view the claim is about: on average {100 * own:.0f} % of a factor's DCI importance "
             f"sits in its own TSN (20 % if spread evenly over the five), against {100 * matched['teacher']:.0f} % "
             f"in the best one-to-one matching of equal slices of the teacher's code")
    if len(matched) > 1:
        text += " (" + ", ".join(f"{SHORT[name]} {100 * matched[name]:.0f} %"
                                 for name in trunks if name != "teacher") + ")"
    text += (f". Probed block by block, a TSN block leaks less ({100 * tsn_leak['leakage_excess']['mean']:.1f} "
             f"points over chance on the other factors, against {100 * teacher_leak['leakage_excess']['mean']:.1f} "
             f"for equal slices of the teacher's code) but also carries less of its own factor "
             f"({100 * tsn_leak['own_excess']['mean']:.1f} points over chance, against "
             f"{100 * teacher_leak['own_excess']['mean']:.1f}). ")
    as_blocks = own > matched["teacher"] and tsn_leak["leakage_excess"]["mean"] < teacher_leak["leakage_excess"]["mean"]
    if as_blocks:
        text += ("So at this scale the factor networks are task-wise disentangled as blocks: each factor lies mostly "
                 "in its own TSN (which training a TSN on its task alone makes likely) and a TSN block holds far less "
                 "of the other factors than a slice of the teacher's code")
    else:
        text += "So at this scale the TSN blocks are not more task-wise than slices of the teacher's code"
    text += ("; they are not disentangled dimension by dimension (DCI)" if lower else
             "; dimension by dimension (DCI) they are too")
    if tsn_leak["own_excess"]["mean"] < teacher_leak["own_excess"]["mean"]:
        text += ", and a TSN block holds less of its own factor than the teacher's code does"
    return text + "."


REFERENCE_BETA = 1e-3  # the recipes' β: seeded in the sweep together with β = 0
CODES = {"pooled": "pooled TSN features", "z": "TSN codes z"}


def _range(values: Sequence[float], scale: float = 1.0, digits: int = 3) -> str:
    low, high = scale * min(values), scale * max(values)
    return f"{low:.{digits}f}" if round(low, digits) == round(high, digits) else f"{low:.{digits}f}–{high:.{digits}f}"


def _dci(spread: dict[str, Any]) -> str:
    return f"{spread['mean']:.3f}" if spread["n"] == 1 else f"{spread['mean']:.3f} ± {spread['std']:.3f}"


def sweep_reading(sweep: dict[str, Any]) -> str:
    """The β / InfoMin sweep on the validation carve-out: the teacher's scale, the accuracy every point keeps, the
    seeded comparison (the recipes' β against β = 0), and the range of the TSN codes' DCI disentanglement per
    InfoMin variant against the teacher's features."""
    points, teacher = sweep["points"], sweep.get("teacher")
    if not points or not teacher:
        return "*The β / InfoMin sweep*: no point has been scored yet."
    seeded = {p["beta"]: p for p in points if p["infomin"] == "batch" and p["seeds"] > 1}
    single = sum(p["seeds"] == 1 for p in points)
    solved = min(teacher["accuracy"][name] for name in SOLVED_FACTORS)
    repeated = ", ".join(f"{_seeds(p['seeds'])} at β = {p['beta']:g}" for p in seeded.values())
    text = (f"*The β / InfoMin sweep* (dSprites, the {sweep['split']}; {len(points)} points, {repeated}, one seed "
            f"at each of the other {single}). Its teacher solves shape, scale and both positions (at least "
            f"{100 * solved:.2f} %), and every factorization keeps a mean validation accuracy of "
            f"{_range([p['mean_accuracy']['mean'] for p in points], 100, 1)} % (teacher "
            f"{100 * teacher['mean_accuracy']:.1f} %)")
    if REFERENCE_BETA in seeded and 0.0 in seeded:
        ref, zero = seeded[REFERENCE_BETA], seeded[0.0]
        words = {"ahead": "higher", "behind": "lower", "level": "within the seeds' spread", "open": "one seed"}
        text += (f". At the recipes' β = {REFERENCE_BETA:g} against β = 0 (batch InfoMin), the "
                 + "; ".join(f"{CODES[rep]} score a DCI disentanglement of {_dci(ref[rep]['dci_disentanglement'])} "
                             f"against {_dci(zero[rep]['dci_disentanglement'])} "
                             f"({words[verdict(ref[rep]['dci_disentanglement'], zero[rep]['dci_disentanglement'])]})"
                             for rep in CODES))
    moved = []
    for rep in CODES:
        by_variant = {v: [p[rep]["dci_disentanglement"]["mean"] for p in points if p["infomin"] == v]
                      for v in ("batch", "vib")}
        ranges = [f"{_range(values)} with the {'batch' if v == 'batch' else 'variational'} InfoMin over "
                  f"{len(values)} values of β" for v, values in by_variant.items() if values]
        text += f". The {CODES[rep]}: " + " and ".join(ranges)
        noise = 2 * max((p[rep]["dci_disentanglement"]["std"] for p in seeded.values()), default=0.0)
        low = min(points, key=lambda p: p[rep]["dci_disentanglement"]["mean"])
        high = max(points, key=lambda p: p[rep]["dci_disentanglement"]["mean"])
        gap = high[rep]["dci_disentanglement"]["mean"] - low[rep]["dci_disentanglement"]["mean"]
        if seeded and gap > noise:
            moved.append(f"{gap:.3f} for the {CODES[rep]} (lowest {_point(low)}, highest {_point(high)}; twice the "
                         f"seeds' spread: {noise:.3f})")
    teacher_dci = teacher["features"]["dci_disentanglement"]
    text += f"; the teacher's features score {teacher_dci:.3f}. So at this scale "
    if moved:
        text += "the largest gap between two points is " + " and ".join(moved)
    else:
        text += "no two points' DCI disentanglement differ by more than twice the seeds' spread"
    if max(p[rep]["dci_disentanglement"]["mean"] for p in points for rep in CODES) < teacher_dci:
        text += ", and no point brings them up to the teacher's features"
    return text + "."


def _point(point: dict[str, Any]) -> str:
    return f"β = {point['beta']:g} {point['infomin']}" + (", one seed" if point["seeds"] == 1 else "")


def _first_cell(entry: dict[str, Any], methods: Sequence[str]) -> tuple[str, dict[str, Any]] | None:
    """The fewest labels at which all of ``methods`` have results, and that cell."""
    for fraction, cell in entry["fractions"].items():
        if all(name in cell for name in methods):
            return fraction, cell
    return None


def _spread_of_methods(results: dict[str, Any]) -> float:
    """The largest gap between two methods' means in any cell (0 when no cell has two methods)."""
    gaps = [0.0]
    for entry in results["tasks"].values():
        for cell in entry["fractions"].values():
            means = [value["mean"] for name, value in cell.items() if name in results["methods"]]
            if len(means) > 1:
                gaps.append(max(means) - min(means))
    return max(gaps)


def _transfer_sentence(dataset: str, results: dict[str, Any]) -> str | None:
    """Per held-out task, at the fewest labels with results: the new TSN on the frozen CKN against the same network
    from scratch, the frozen teacher's trunk, the linear probe and the ceiling; then the count of verdicts, and all
    the labels' cells."""
    parts, seeds, verdicts, full = [], set(), [], []
    for task, entry in results["tasks"].items():
        first = _first_cell(entry, ("kf_tsn", "scratch"))
        if first is None:
            continue
        fraction, cell = first
        kf, scratch = cell["kf_tsn"], cell["scratch"]
        seeds.add(min(kf["n"], scratch["n"]))
        verdicts.append((float(fraction), verdict(kf, scratch)))
        extra = [f"{label} {_pct(cell[name])}" for name, label in (("teacher_tsn", "frozen teacher trunk"),
                                                                    ("ckn_probe", "linear probe on the CKN"),
                                                                    ("kf_tsn_wide", "twice the width"))
                 if name in cell]
        extra.append(f"ceiling {100 * entry['ceiling']:.1f} %, chance {100 * entry['chance']:.0f} %")
        if verdicts[-1][1] == "open":
            compared = f"against {_pct(scratch)} for the same network from scratch (one seed: no verdict yet; "
        else:
            word = {"ahead": "ahead of", "behind": "behind", "level": "level with"}[verdicts[-1][1]]
            compared = f"{word} the same network from scratch ({_pct(scratch)}; "
        parts.append(f"{task} from {100 * float(fraction):g} % of the labels ({cell['labels']:,} images): new TSN "
                     f"{_pct(kf)}, {compared}" + "; ".join(extra) + ")")
        last = list(entry["fractions"])[-1]
        if last != fraction and all(name in entry["fractions"][last] for name in ("kf_tsn", "scratch")):
            every = entry["fractions"][last]
            full.append(f"{task} {_pct(every['kf_tsn'])} against {_pct(every['scratch'])}")
    if not parts:
        return None
    name = DATASET_NAMES.get(dataset, dataset)
    per_cell = f"{_seeds(max(seeds))} " + ("per cell" if results.get("complete") else "at most per cell so far")
    text = f"On {name} ({per_cell}): " + "; ".join(parts)
    counts = {word: sum(v == word for _, v in verdicts) for word in ("ahead", "level", "behind", "open")}
    text += (f". With the fewest labels it is ahead of the network from scratch on {counts['ahead']} of "
             f"{len(verdicts)} held-out tasks, level on {counts['level']}, behind on {counts['behind']}")
    if counts["open"]:
        text += f", still open (one seed) on {counts['open']}"
    if full:
        text += f"; with all the labels, new TSN against scratch: {', '.join(full)}"
    gap = _spread_of_methods(results)
    if gap < 0.03:
        text += (f". Every method is within {100 * gap:.1f} points of the others in every cell: a test this close to "
                 f"its ceiling hardly separates them")
    return text


def claim_c(transfers: dict[str, dict[str, Any]]) -> str:
    sentences = [s for dataset, results in transfers.items() if (s := _transfer_sentence(dataset, results))]
    if not sentences:
        return "*Claim c*: no transfer run has finished yet."
    return "*Claim c*. " + ". ".join(sentences) + "."


def cost(experiments: dict[str, dict[str, Any]]) -> str:
    """Core-hours the finished runs took (a run shared by several experiments counted once), and what the missing
    ones will take at the mean minutes of the finished runs of their kind on their dataset (else on any)."""
    done: dict[tuple[str, str], tuple[str, float]] = {}
    missing: set[tuple[str, str]] = set()
    for results in experiments.values():
        for name, run in results["runs"].items():
            done[results["dataset"], name] = run["kind"], run.get("seconds_all_segments", run["seconds"]) / 60
        missing |= {(results["dataset"], name) for name in results["missing_runs"]}
    missing -= set(done)
    measured: dict[tuple[str, ...], list[float]] = {}  # (dataset, kind) and (kind,) -> minutes of each run
    for (dataset, _), (kind, minutes) in done.items():
        measured.setdefault((dataset, kind), []).append(minutes)
        measured.setdefault((kind,), []).append(minutes)
    spent = sum(minutes for _, minutes in done.values())
    priced = [float(np.mean(measured.get((dataset, run_kind(name))) or measured[run_kind(name),]))
              for dataset, name in missing if (run_kind(name),) in measured]
    left, unpriced = sum(priced), len(missing) - len(priced)
    text = (f"**Cost, measured.** The {len(done)} finished runs took {spent / 60:.1f} hours of one core each (two "
            f"runs at a time, one torch thread each, at `nice -n 15`, beside other work on the 2 cores)")
    if missing:
        text += (f"; at the mean minutes of the finished runs of the same kind and dataset, the {len(missing)} "
                 f"still to run need about {left / 60:.1f} more")
        if unpriced:
            text += f" ({unpriced} of a kind not measured yet not counted)"
        text += (f": about {(spent + left) / 60:.1f} core-hours for the whole set, {(spent + left) / 120:.1f} hours "
                 f"of this machine running two at a time")
    return text + "."


def reading(disentanglement: dict[str, Any], transfers: dict[str, dict[str, Any]],
            sweep: dict[str, Any] | None = None) -> str:
    """The whole block: the scale, then claim b, the sweep, then claim c, as one Markdown paragraph each."""
    complete = (disentanglement["complete"] and all(t["complete"] for t in transfers.values())
                and (sweep is None or sweep["complete"]))
    caveat = ("" if complete else " Some runs are still to come (tables below): a claim is read from what has "
                                  "finished, and a one-seed figure is a reading, not a result.")
    paragraphs = [status(disentanglement, transfers) + caveat, claim_b(disentanglement)]
    paragraphs += [sweep_reading(sweep)] if sweep is not None else []
    paragraphs += [claim_c(transfers)]
    return "\n\n".join(_wrap(text) for text in paragraphs)


def _wrap(text: str) -> str:
    """Lines of at most 118 characters that never separate a number from its unit or its ± spread."""
    glued = text.replace(" %", "\0%").replace(" ± ", "\0±\0")
    return textwrap.fill(glued, width=118, break_on_hyphens=False).replace("\0", " ")


def with_reading(readme: str, text: str) -> str:
    """``readme`` with the block between its claims-reading markers replaced by ``text``."""
    start, end = readme.find(READING_START), readme.find(READING_END)
    if start < 0 or end < start:
        raise KFError(f"the README has no '{READING_START} ...' ... '{READING_END}' block to rewrite")
    opening_end = readme.index("\n", start) + 1
    return readme[:opening_end] + "\n" + text + "\n\n" + readme[end:]


def claims_reading(folder: Path) -> str:
    """:func:`reading` of the full-scale JSON files in ``folder`` (claim b's, the sweep's and every transfer's:
    dSprites first)."""
    path = folder / "disentanglement-dsprites-full.json"
    if not path.is_file():
        raise KFError(f"{path} is missing: run the disentanglement experiment (or --assemble-only) first")
    transfers = {}
    for dataset in ("dsprites", "fashion-mnist"):
        transfer = folder / f"transfer-{dataset}-full.json"
        if transfer.is_file():
            transfers[dataset] = json.loads(transfer.read_text())
    experiments = {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*-full.json"))
                   if p.stem != "cost-probe-full"}
    sweep = experiments.get("sweep-dsprites-full")
    return reading(json.loads(path.read_text()), transfers, sweep) + "\n\n" + _wrap(cost(experiments))
