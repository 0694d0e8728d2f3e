"""Class names of the datasets the official checkpoints were trained on, in their index order.

One name a line in ``<dataset>.txt`` beside this file; line ``N`` (from 0) is class ``N``:
``kinetics400`` (400, alphabetical, as the official TSM/TDN label scripts write it), ``sthv1``
(174, sorted, as the official Something-Something V1 script) and ``sthv2`` (174, the order of the
dataset's own label file, which the official V2 script keeps).
"""
from __future__ import annotations

from functools import cache
from importlib import resources

__all__ = ["DATASETS", "load_label_names"]

# dataset key -> number of classes
DATASETS: dict[str, int] = {"kinetics400": 400, "sthv1": 174, "sthv2": 174}


@cache
def load_label_names(dataset: str) -> tuple[str, ...]:
    """Class names of ``dataset`` (``'kinetics400'``, ``'sthv1'`` or ``'sthv2'``), by class index.

    Args:
        dataset: a dataset key of :data:`DATASETS`.

    Example:
        >>> load_label_names('kinetics400')[:2]
        ('abseiling', 'air drumming')
    """
    if dataset not in DATASETS:
        raise ValueError(f"no label names for dataset '{dataset}': expected one of {', '.join(DATASETS)}")
    text = resources.files(__name__).joinpath(f"{dataset}.txt").read_text(encoding="utf-8")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != DATASETS[dataset]:  # a damaged install would shift every prediction's name
        raise RuntimeError(f"label file {dataset}.txt has {len(names)} names, expected {DATASETS[dataset]}")
    return names
