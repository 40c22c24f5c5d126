"""Which of a lab's cells are labelled for adapting and which are its test.

``per_class`` cells of each class are drawn, in a seeded order, from whole groups (a patient's
cells, where the lab names patients; else each image is its own): a group drawn for any class is
out of the test, so no patient is both adapted on and scored. The draws of several ``per_class``
are nested (the 5 cells are among the 10), and every ``per_class`` is scored on the same cells,
those of the groups never drawn, so a curve over ``per_class`` compares like with like.

>>> labels = np.repeat(["a", "b"], 12)
>>> d = draw(labels, np.arange(24), [2, 5], seed=0)
>>> [len(d.labelled[n]) for n in (2, 5)], len(d.test), set(d.labelled[2]) <= set(d.labelled[5])
([4, 10], 14, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from leuktune.data.files import DataError

# A class needs this many cells beyond the labelled ones: some of it must be left to test on.
MARGIN = 5


@dataclass(frozen=True)
class Draw:
    """Rows of the lab's table: ``labelled[per_class]`` (nested), ``test`` (the groups never drawn)
    and ``aside`` (the other cells of drawn groups: neither adapted on nor scored)."""

    labelled: dict[int, np.ndarray]
    test: np.ndarray
    aside: np.ndarray


def draw(labels: np.ndarray, groups: np.ndarray, per_class: Sequence[int], seed: int, *,
         where: str = "the lab's cells") -> Draw:
    """Draw ``per_class`` labelled cells of each class (see the module's docstring); a class with
    fewer than the largest ``per_class`` + MARGIN cells, or left with fewer than MARGIN to test on
    once whole groups are drawn, is refused by name with its count."""
    labels, groups = np.asarray(labels), np.asarray(groups)
    largest = max(per_class)
    names, counts = np.unique(labels, return_counts=True)
    names = [str(name) for name in names]
    for name, count in zip(names, counts):
        if count < largest + MARGIN:
            raise DataError(f"{where}: class {name!r} has {count} cell(s); adapting with {largest} labelled cells a "
                            f"class needs at least {largest + MARGIN} ({largest} + {MARGIN} left to test on): lower "
                            f"--per-class or add cells of {name!r}")
    rng = np.random.default_rng(seed)
    drawn_groups: set = set()
    ordered: dict[str, list[int]] = {}
    for name in names:
        rows = np.flatnonzero(labels == name)
        by_group: dict = {}
        for row in rows[rng.permutation(len(rows))]:
            by_group.setdefault(groups[row], []).append(int(row))
        taken: list[int] = []
        # the groups already drawn for another class first: they are out of the test anyway
        order = sorted(enumerate(by_group), key=lambda item: (item[1] not in drawn_groups, item[0]))
        for _, group in order:
            if len(taken) >= largest:
                break
            taken += by_group[group]
            drawn_groups.add(group)
        ordered[name] = taken[:largest]
    labelled = {n: np.sort(np.concatenate([ordered[name][:n] for name in names])).astype(np.int64)
                for n in per_class}
    out = np.isin(groups, list(drawn_groups))
    test = np.flatnonzero(~out)
    for name in names:
        left = int((labels[test] == name).sum())
        if left < MARGIN:
            raise DataError(f"{where}: class {name!r} has {int((labels == name).sum())} cell(s), but drawing "
                            f"{largest} of them takes whole groups (patients) and leaves {left} to test on (at least "
                            f"{MARGIN} are needed): lower --per-class or add patients of {name!r}")
    aside = np.setdiff1d(np.flatnonzero(out), labelled[largest])
    return Draw(labelled, test, aside)


def halves(rows: np.ndarray, labels: np.ndarray, groups: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` in two halves of whole groups, each class's groups dealt alternately in a seeded
    order: what ``bench adapt`` hands adapting as unlabelled cells (the first) and scores on (the
    second)."""
    rows = np.asarray(rows)
    rng = np.random.default_rng(seed)
    first: set = set()
    dealt: set = set()
    for name in np.unique(labels[rows]):
        mine = [g for g in dict.fromkeys(groups[rows[labels[rows] == name]]) if g not in dealt]
        for i, group in enumerate(rng.permutation(np.array(mine, dtype=object))):
            dealt.add(group)
            if i % 2:
                first.add(group)
    mask = np.array([groups[r] in first for r in rows], dtype=bool)
    return rows[mask], rows[~mask]
