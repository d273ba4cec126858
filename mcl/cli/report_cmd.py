"""`mcl report RUN_DIR [RUN_DIR ...] [--out DIR]`: runs grouped by all but the seed, tables and R heatmaps."""

from __future__ import annotations

import argparse
from pathlib import Path


def _report(args: argparse.Namespace) -> int:
    from mcl.io import check_output
    from mcl.train.report import markdown, report

    check_output(args.out, "dir")
    table = report(args.runs, args.out)
    print(markdown(table))
    print(f"wrote {Path(args.out) / 'report.html'} (opens offline), report.md, report.csv and R heatmap PNGs")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `mcl report`."""
    p = sub.add_parser("report", help="summarise finished runs: final scores, OP/BWT/FWT, R heatmaps")
    p.add_argument("runs", nargs="+", help="run directories (runs/<name>-<method>-<hash>)")
    p.add_argument("--out", default="reports", metavar="DIR", help="output directory (default: reports)")
    p.set_defaults(func=_report)
