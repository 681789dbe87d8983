"""``soakd baseline`` and ``soakd compare``: arguments and the commands (soakd.cli dispatches).

Exit codes: baseline 0 written, 2 bad spec/usage/JSON, 3 target, spaces or
load failed; compare 0 no regression, 1 at least one regression (or a figure
missing from NEW), 2 bad input (the file and the JSON path of what is wrong).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import uvloop

from soakd.baseline.compare import (
    FAILING,
    CompareError,
    compare,
    parse_threshold,
    render_table,
    settings_notes,
)
from soakd.baseline.model import Baseline, BaselineFormatError, from_json
from soakd.baseline.plan import BaselinePlan, PlanError, load_plan
from soakd.baseline.run import TargetChoice, render_files, take_baseline, write_all
from soakd.errors import ExitCode, UsageError


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    b = sub.add_parser(
        "baseline",
        help="single-node baselines: throughput and latency per operation and dataset size",
    )
    b.add_argument("spec", type=Path, nargs="?", help="a YAML file with a 'baseline:' section")
    where = b.add_mutually_exclusive_group()
    where.add_argument("--launch", metavar="CMD", help="start CMD first (needs --target-url)")
    where.add_argument(
        "--reference-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="an extra flag for the bundled reference target (repeatable)",
    )
    b.add_argument("--target-url", help="the target (default: launch the reference target)")
    b.add_argument("--scale", default="1", help="dataset size factor (0.01: 100/1K/10K memories)")
    b.add_argument("--out", type=Path, help="output directory (default: ./baseline)")
    b.add_argument(
        "--rates-from",
        type=Path,
        metavar="BASELINE_JSON",
        help="measure latency at the rates this baseline used (for a regression gate)",
    )
    b.add_argument(
        "--render",
        type=Path,
        metavar="BASELINE_JSON",
        help="only re-render the Markdown from a baseline.json (into --out or its directory)",
    )
    c = sub.add_parser("compare", help="the regression gate: compare two baseline.json files")
    c.add_argument("old", type=Path)
    c.add_argument("new", type=Path)
    c.add_argument("--max-regression", default="5%", help="threshold, e.g. 5%% (default)")


def read_baseline(path: Path) -> Baseline:
    """A baseline.json, or UsageError naming the file, the JSON path and the problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None
    try:
        return from_json(text)
    except BaselineFormatError as exc:
        raise UsageError(f"{path}: {exc}") from None


def cmd_baseline(args: argparse.Namespace) -> int:
    if args.render is not None:
        baseline = read_baseline(args.render)
        paths = render_files(baseline, args.out or args.render.parent)
        for p in paths:
            print(p)
        return ExitCode.PASSED
    try:
        scale = float(args.scale)
    except ValueError:
        raise UsageError(f"--scale: expected a number, got {args.scale!r}") from None
    try:
        plan = (load_plan(args.spec) if args.spec else BaselinePlan()).scaled(scale)
    except PlanError as exc:
        raise UsageError(str(exc)) from None
    if args.launch and not args.target_url:
        raise UsageError("--launch needs --target-url (the URL the launched command serves)")
    choice = TargetChoice(args.target_url, args.launch, tuple(args.reference_arg))
    if choice.reference_args and choice.url:
        raise UsageError("--reference-arg applies only to the bundled reference target")
    rates_from = read_baseline(args.rates_from) if args.rates_from else None
    baseline = uvloop.run(take_baseline(plan, choice, err=sys.stderr, rates_from=rates_from))
    for p in write_all(baseline, args.out or Path("baseline")):
        print(p)
    return ExitCode.PASSED


def cmd_compare(args: argparse.Namespace) -> int:
    try:
        threshold = parse_threshold(args.max_regression)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    old, new = read_baseline(args.old), read_baseline(args.new)
    try:
        rows = compare(old, new, threshold)
    except CompareError as exc:
        raise UsageError(f"{args.old} vs {args.new}: {exc}") from None
    print(render_table(rows, threshold, settings_notes(old, new)), end="")
    return ExitCode.FAILED if any(r.verdict in FAILING for r in rows) else ExitCode.PASSED
