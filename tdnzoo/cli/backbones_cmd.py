"""``tdnzoo backbones``: the one-model-per-timm-family list and the family table of ``docs/backbones.md``."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

TABLE_START = "<!-- family-table:start -->"
TABLE_END = "<!-- family-table:end -->"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backbones", help="timm families: the one-model-per-family list and the TSN/TSM/TDN table")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = actions.add_parser("families", help="generate the one-model-per-family list (the smallest model of each)")
    q.add_argument("--write", action="store_true", help="write tdnzoo/bench/timm_families.json instead of printing")
    q.set_defaults(func=run_families)
    q = actions.add_parser("table", help="check TSN, TSM and TDN on every family of the list; print the table")
    q.add_argument("--write", metavar="MARKDOWN", help="replace the table between the family-table markers of this file")
    q.add_argument("--json", metavar="PATH", help="also save the raw results as JSON")
    q.add_argument("--families", nargs="*", help="only these families")
    q.add_argument("--from-json", metavar="PATH", help="render the results a previous run saved with --json (no models run)")
    q.add_argument("--recount-flops", action="store_true",
                   help="with --from-json: count the GFLOPs column again (the checks are kept as saved)")
    q.set_defaults(func=run_table)


def run_families(args: argparse.Namespace) -> int:
    from ..bench.survey import FAMILY_LIST, smallest_per_family, write_family_list

    if args.write:
        rows = write_family_list()
        print(f"wrote {len(rows)} families to {FAMILY_LIST}")
        return 0
    for row in smallest_per_family():
        print(f"{row['family']:28s} {row['model']:40s} {row['params'] / 1e6:8.2f}M")
    return 0


def run_table(args: argparse.Namespace) -> int:
    from ..bench.survey import family_table, load_family_list, render_table

    if args.write:  # checked before the table runs for half an hour
        text = Path(args.write).read_text()
        if TABLE_START not in text or TABLE_END not in text:
            raise ValueError(f"{args.write} has no {TABLE_START} ... {TABLE_END} markers")
    if args.json and not Path(args.json).parent.is_dir():
        raise NotADirectoryError(f"--json {args.json}: {Path(args.json).parent} is not a folder")
    if args.recount_flops and not args.from_json:
        raise ValueError("--recount-flops recounts a saved run: give it --from-json PATH")
    if args.from_json:
        results = json.loads(Path(args.from_json).read_text())
        if args.recount_flops:
            from ..bench.survey import recount_flops

            results = recount_flops(results, progress=True)
        return _emit(render_table(results), results, args)
    rows = load_family_list()
    if args.families:
        unknown = sorted(set(args.families) - {r["family"] for r in rows})
        if unknown:
            raise ValueError(f"unknown timm families {unknown}: the list holds the modules of timm.list_modules()")
        rows = [r for r in rows if r["family"] in args.families]
    table, results = family_table(rows, progress=True)
    return _emit(table, results, args)


def _emit(table: str, results: list[dict], args: argparse.Namespace) -> int:
    """Save the raw results (``--json``), then print the table or write it between the markers."""
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str) + "\n")
    if not args.write:
        print(table)
        return 0
    path = Path(args.write)
    text = path.read_text()
    if TABLE_START not in text or TABLE_END not in text:
        raise ValueError(f"{path} has no {TABLE_START} ... {TABLE_END} markers")
    head, rest = text.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    path.write_text(f"{head}{TABLE_START}\n{table}\n{TABLE_END}{tail}")
    print(f"wrote the table of {len(results)} families to {path}")
    return 0
