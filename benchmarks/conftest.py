"""pytest-benchmark suite settings: `pytest benchmarks/ --benchmark-only` (not part of the tests).

Sizes come from the environment so a quick run stays quick:
TDNZOO_BENCH_SIZE (default 224), TDNZOO_BENCH_SEGMENTS (default 8), TDNZOO_BENCH_BATCH (throughput
batch, default 8), TDNZOO_BENCH_ROUNDS (default 5).
"""
from __future__ import annotations

import os

import pytest
import torch

SIZE = int(os.environ.get("TDNZOO_BENCH_SIZE", "224"))
SEGMENTS = int(os.environ.get("TDNZOO_BENCH_SEGMENTS", "8"))
BATCH = int(os.environ.get("TDNZOO_BENCH_BATCH", "8"))
ROUNDS = int(os.environ.get("TDNZOO_BENCH_ROUNDS", "5"))


@pytest.fixture(scope="session", autouse=True)
def _inductor_freezing():
    """As `tdnzoo bench --compile`: inference graphs freeze their weights (folded, prepacked for oneDNN)."""
    with torch._inductor.config.patch(freezing=True):
        yield
