"""``tdnzoo bench-accuracy``: the accuracy benchmark (temporary name until it joins ``tdnzoo bench accuracy``)."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from .. import accuracy_bench

    p = sub.add_parser(
        "bench-accuracy",
        help="accuracy benchmark: TSN vs TSM vs TDN on generated temporal-reasoning videos",
        description="Generate the synthetic dataset, train TSN, TSM and TDN on the same backbone, budget and seed, "
        "evaluate them and write results.json, report.md, learning_curves.png and confusion_<method>.png into "
        "--output. `tdnzoo eval` reports merge in with --merge-eval.",
    )
    accuracy_bench.add_arguments(p)
    p.set_defaults(func=accuracy_bench.run)
