"""The substituter benchmark in quick mode, through the runner, as CI runs it.

Times are not asserted (the machine is shared); bytes are, since they do not depend on timing:
with the stored layers downloading nothing, streaming fetches a fraction of what realising does.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_quick_benchmark_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--suites", "substituter", "--out", str(out)],
        cwd=REPO,
        check=True,
        timeout=900,
    )  # fmt: skip
    report = out.read_text()
    match = re.search(r"^## Layers from the binary cache\n(.*?)(?=^## |\Z)", report, re.M | re.S)
    assert match, "no substituter section"
    rows = [
        re.split(r" \| ", line.strip("| "))
        for line in match.group(1).splitlines()
        if line.startswith("| ") and not line.startswith("| layers stored")
    ]
    assert [(row[0].split()[0], row[1]) for row in rows] == [
        (fraction, mode) for fraction in ("0", "50", "90") for mode in ("realise", "stream")
    ]
    fetched = {(row[0].split()[0], row[1]): float(row[2]) for row in rows}
    assert fetched[("90", "stream")] <= 0.2 * fetched[("90", "realise")]
    # Nothing stored: the same NARs, plus the .ls listings that spare a second pass over each.
    assert fetched[("0", "stream")] <= 1.1 * fetched[("0", "realise")]
    assert "Both paths gave the same image digest" in match.group(1)
