"""The benchmark report: a header (machine, date, command, revision), how to reproduce it, then
the suites' sections."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COMMAND = "python -m benchmarks.run"

REPRODUCE = f"""\
## How to reproduce

On a Debian or Ubuntu machine, from a clone of this repository, as root:

```
scripts/setup-system --test && scripts/setup-python cloud,test
NIX_CONFIG=$'substituters =\\nexperimental-features = nix-command' .venv/bin/{COMMAND}
```

It writes this file (`--out PATH` writes elsewhere; `--quick` runs every suite at a small size,
as CI does, only to keep the scripts working: its figures mean little). One suite alone:
`.venv/bin/python -m benchmarks.bench_pipeline [--quick]` prints its section. Every figure is
measured beside its baseline in the same run; the machine is shared and noisy, so compare the
ratios, not the absolute times, and expect a few percent of variation between runs. The layer
pipeline's input is copied from the host's `/usr/lib`, so its bytes (and figures) are per
machine.
"""


def header(command: str, quick: bool, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    lines = [
        "# Benchmarks",
        "",
        f"- Date: {now.strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Command: `{command}`"
        + (" (quick mode: small sizes, figures not meaningful)" if quick else ""),
        f"- Revision: {_revision()}",
        f"- Machine: {_machine()}",
        f"- Software: {_software()}",
        "",
    ]
    return "\n".join(lines)


def document(command: str, quick: bool, sections: Sequence[str]) -> str:
    parts = [header(command, quick), REPRODUCE, *(section.rstrip() + "\n" for section in sections)]
    return "\n".join(parts)


def _run(*command: str) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def _revision() -> str:
    commit = _run("git", "rev-parse", "--short=12", "HEAD")
    dirty = _run("git", "status", "--porcelain", "--untracked-files=no")
    return commit + (" with uncommitted changes" if dirty not in ("", "unknown") else "")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _memory_gb() -> str:
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return "unknown"
    return f"{pages / 2**30:.0f} GiB"


def _machine() -> str:
    return (
        f"{os.cpu_count()} CPUs ({_cpu_model()}), {_memory_gb()} RAM, "
        f"{platform.system()} {platform.release()} {platform.machine()}"
    )


def _software() -> str:
    from nixery.build.gzipstream import COMPRESSOR

    nix = _run("nix-build", "--version")
    return f"Python {platform.python_version()}, {nix}, layer compressor `{COMPRESSOR}`"
