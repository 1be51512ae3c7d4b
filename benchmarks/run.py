"""Runs every benchmark suite and writes the Markdown report (BENCHMARKS.md by default).

    python -m benchmarks.run [--quick] [--out PATH] [--suites pipeline,cold,...]

A suite is a module `benchmarks/bench_<name>.py` defining `run(quick: bool) -> str`, a Markdown
section starting with `## <title>`. Sections come in a fixed order (pipeline, cold, warm,
incremental), then any other suite alphabetically. A suite that fails stops the run: a report
with a figure missing is not written.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks.report import COMMAND, REPO, document

BENCHMARKS_DIR = Path(__file__).resolve().parent
FIXED_ORDER = ("pipeline", "cold", "warm", "incremental")

Suite = Callable[[bool], str]


def suite_names(directory: Path = BENCHMARKS_DIR) -> list[str]:
    """Every `bench_<name>.py` in report order."""
    names = {path.stem.removeprefix("bench_") for path in directory.glob("bench_*.py")}
    fixed = [name for name in FIXED_ORDER if name in names]
    return fixed + sorted(names - set(fixed))


def load_suite(name: str) -> Suite | None:
    """The module's `run(quick)`, or None for a module that is not a suite."""
    module = importlib.import_module(f"benchmarks.bench_{name}")
    run = getattr(module, "run", None)
    if not callable(run) or list(inspect.signature(run).parameters) != ["quick"]:
        return None
    return run


def run_suites(names: Sequence[str], quick: bool) -> list[str]:
    sections = []
    for name in names:
        suite = load_suite(name)
        if suite is None:
            continue
        print(f"running {name}{' (quick)' if quick else ''}...", file=sys.stderr, flush=True)
        section = suite(quick)
        if not section.startswith("## "):
            raise ValueError(f"bench_{name}.run must return a section starting with '## '")
        sections.append(section)
    return sections


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, as CI runs it")
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md", help="report path")
    parser.add_argument(
        "--suites", help="comma-separated suite names (default: all), e.g. pipeline,cold"
    )
    args = parser.parse_args(argv)
    available = suite_names()
    names = available
    if args.suites:
        names = [name.strip() for name in args.suites.split(",") if name.strip()]
        unknown = sorted(set(names) - set(available))
        if unknown:
            parser.error(f"unknown suites {unknown}; available: {', '.join(available)}")
        names = [name for name in available if name in names]
    command = " ".join([COMMAND, *(argv if argv is not None else sys.argv[1:])])
    sections = run_suites(names, args.quick)
    report = document(command, args.quick, sections)
    args.out.write_text(report)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
