"""Parameter accounting: a bank (n*s + S) against one student per task subset (2^n*S) and the teacher.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from kf_model.errors import InvalidArgumentError


def assembled_parameters(ckn_params: int, tsn_params: Sequence[int], subset: Iterable[int]) -> int:
    """Parameters of the network assembled from the CKN and the TSNs with the given task indices."""
    return int(ckn_params) + sum(int(tsn_params[i]) for i in set(subset))


def parameter_accounting(ckn_params: int, tsn_params: Sequence[int], teacher_params: int) -> dict[str, Any]:
    """Storage of a factor bank against one distilled student per subset of tasks (the paper's argument).

    With n tasks, S = CKN size and s_i = TSN sizes:
    - "bank_params" = S + sum_i s_i (= n*s + S): everything needed to assemble any subset;
    - "subset_students_params_paper" = 2^n * S: the paper's count, one S-sized student per subset;
    - "subset_students_params" = (2^n - 1) * S: the same over non-empty subsets only;
    - "materialised_subsets_params" = sum over non-empty subsets A of (S + sum_{i in A} s_i)
      = (2^n - 1) S + 2^(n-1) sum_i s_i: storing every assembled network separately;
    - "assembled_params_single_task" [n] = S + s_i, "assembled_params_all_tasks" = bank_params,
      "assembled_params_by_subset_size" [n]: entry k-1 = mean size of an assembled network over the
      subsets of size k = S + k * mean(s);
    - "bank_fraction_of_subset_students" = bank / ((2^n - 1) S), "bank_vs_teacher" = bank / teacher.
    Counts are exact Python ints (2^n grows fast: for n = 1000 they have ~300 digits); the fraction
    is computed as int / int, so it shrinks towards 0.0 instead of overflowing.
    """
    n, s_total = len(tsn_params), sum(int(p) for p in tsn_params)
    big_s = int(ckn_params)
    if n == 0:
        raise InvalidArgumentError("parameter_accounting needs at least one TSN")
    bank = big_s + s_total
    subsets = (2**n - 1) * big_s
    return {
        "num_tasks": n,
        "ckn_params": big_s,
        "tsn_params": [int(p) for p in tsn_params],
        "teacher_params": int(teacher_params),
        "bank_params": bank,
        "subset_students_params_paper": 2**n * big_s,
        "subset_students_params": subsets,
        "materialised_subsets_params": subsets + 2 ** (n - 1) * s_total,
        "assembled_params_single_task": [big_s + int(p) for p in tsn_params],
        "assembled_params_all_tasks": bank,
        "assembled_params_by_subset_size": [big_s + k * s_total / n for k in range(1, n + 1)],
        "bank_fraction_of_subset_students": bank / subsets if subsets else None,
        "bank_vs_teacher": bank / int(teacher_params) if teacher_params else None,
    }
