"""The pipeline and cold-image benchmarks in quick mode, through the runner, as CI runs them.

Figures are never asserted against a time (the machine is shared); what is checked is that every
suite ran on real inputs and reported every figure beside its baseline.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks import run as runner
from benchmarks._pipeline import MissingTool, nix_build, require_tools, runtime_dependencies

from tests.conftest import REPO

pytestmark = pytest.mark.bench

NUMBER = r"[0-9]+(?:\.[0-9]+)?"


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("report") / "BENCHMARKS.md"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--quick",
            "--suites",
            "cold,pipeline",
            "--out",
            str(out),
        ],
        cwd=REPO,
        check=True,
        timeout=900,
    )
    return out.read_text()


def section(report: str, title: str) -> str:
    match = re.search(
        rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", report, re.MULTILINE | re.DOTALL
    )
    assert match, f"no section {title!r}"
    return match.group(1)


def table_rows(text: str) -> list[list[str]]:
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    cells = [re.split(r"(?<!\\) \| ", row.strip("| ")) for row in rows]
    return cells[1:]  # without the header


def test_report_has_the_header_reproduction_and_sections_in_order(quick_report: str) -> None:
    assert quick_report.startswith("# Benchmarks\n")
    for field in ("Date", "Command", "Revision", "Machine", "Software"):
        assert re.search(rf"^- {field}: \S", quick_report, re.MULTILINE), field
    assert "`python -m benchmarks.run --quick --suites cold,pipeline" in quick_report
    titles = re.findall(r"^## (.+)$", quick_report, re.MULTILINE)
    # The runner's fixed order, not the order the suites were named in.
    assert titles == ["How to reproduce", "Layer pipeline throughput", "Cold image"]


def test_pipeline_section_reports_every_pass_beside_its_baselines(quick_report: str) -> None:
    text = section(quick_report, "Layer pipeline throughput")
    rows = {row[0]: row[1:] for row in table_rows(text)}
    assert set(rows) == {
        "ours: one layer (write_store_layer: isal level 2, 2 threads)",
        "ours: whole image (ImageBuilder)",
        r"tar \| pigz -1 \| sha256sum",
        r"tar \| gzip -6 \| sha256sum",
        r"tar \| sha256sum",
        "one layer with isal level 1, 2 threads",
        "one layer with isal level 2, 1 thread",
        "one layer with isal level 3, 2 threads",
    }
    for name, (seconds, rate, ratio, compressed, relative) in rows.items():
        assert float(seconds) > 0 and float(rate) > 0, name
        assert re.fullmatch(rf"{NUMBER}x", ratio), name
        if name != r"tar \| sha256sum":
            assert float(compressed) > 0 and float(relative) > 0, name
    assert rows[r"tar \| gzip -6 \| sha256sum"][4] == "1.000"
    # The input really is the quick slice of host files, a few MB.
    size = re.search(rf"holding ({NUMBER}) MB in ([0-9]+) regular files", text)
    assert size and float(size.group(1)) >= 4 and int(size.group(2)) > 10
    for target in ("`pigz -1`", "`gzip -6`", "Compressed size", "Peak builder RSS"):
        assert re.search(rf"^- .*{re.escape(target)}.*: .+ - .*{NUMBER}", text, re.MULTILINE), (
            target
        )


def test_cold_section_splits_nix_from_ours_for_each_image(quick_report: str) -> None:
    text = section(quick_report, "Cold image")
    rows = table_rows(text)
    assert [(row[0], row[1]) for row in rows] == [
        ("1", "warm"),
        ("1", "cold"),
        ("3", "warm"),
        ("3", "cold"),
    ]
    for packages, _, closure, layers, total, nix, ours, _parts, pigz, ratio in rows:
        paths = int(closure.split(" / ")[0])
        assert paths > int(packages) and int(layers) >= 2
        # The split adds up: Nix and ours are parts of the request's time. Each of the three
        # is printed rounded to 0.01 s, so their sum may exceed the total by up to 0.015 s.
        assert float(nix) + float(ours) <= float(total) + 0.015 + 1e-9
        assert float(pigz) > 0 and float(ratio) >= 0
    assert re.search(
        r"^- Our part of a cold build .*: \*\*(not )?met\*\* - at most", text, re.MULTILINE
    )


def test_a_suite_runs_alone_and_prints_its_section() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_pipeline", "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    assert result.stdout.startswith("## Layer pipeline throughput\n")


def test_host_files_are_copies_of_the_host_library() -> None:
    [package] = nix_build(["hostfiles.quick.all"])
    parts = runtime_dependencies(package)
    assert len(parts) == 4
    copied = sorted(path for part in parts for path in Path(part).rglob("*") if path.is_file())
    assert len(copied) > 10
    sample = copied[len(copied) // 2]
    original = Path("/") / sample.relative_to(
        next(p for p in map(Path, parts) if p in sample.parents)
    )
    assert str(original).startswith("/usr/lib/")
    assert sample.read_bytes() == original.read_bytes()


def test_salted_family_has_the_same_data_under_new_store_paths(tmp_path: Path) -> None:
    salted = tmp_path / "salted"
    salted.mkdir()
    bench_pkgs = REPO / "benchmarks" / "pkgs"
    (salted / "default.nix").write_text(
        f"{{ ... }}@args: import {bench_pkgs} (args // {{ salt = {json.dumps(str(tmp_path))}; }})\n"
    )
    [plain] = nix_build(["synthetic.p001"])
    [fresh] = nix_build(["synthetic.p001"], salted)
    assert plain != fresh
    data = "share/p001/data.txt"
    assert (Path(fresh) / data).read_bytes() == (Path(plain) / data).read_bytes()


def test_suite_order_is_fixed_then_alphabetical(tmp_path: Path) -> None:
    for name in ("zeta", "incremental", "alpha", "warm", "cold", "pipeline"):
        (tmp_path / f"bench_{name}.py").write_text("")
    (tmp_path / "_helpers.py").write_text("")
    assert runner.suite_names(tmp_path) == [
        "pipeline",
        "cold",
        "warm",
        "incremental",
        "alpha",
        "zeta",
    ]


def test_a_missing_baseline_tool_fails_loudly() -> None:
    with pytest.raises(MissingTool, match="no-such-baseline-tool"):
        require_tools("tar", "no-such-baseline-tool")
