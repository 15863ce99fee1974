"""`bench/run --quick` still runs from end to end, so the benchmark cannot rot.

Not a timing test: the figures depend on the machine and are not checked, only that every
measurement produced one.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(180)
def test_bench_quick_runs_every_measurement(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(ROOT / "bench" / "run"), "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=170,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert {"pages", "growth", "files", "e2e", "snapshot", "table"} <= results.keys()
    figures = {row["figure"] for row in results["table"]}
    assert {"p50, c=1", "1 GiB store hit", "uv install, warm", "pip install, cold"} <= figures
    assert all(row["value"] is not None for row in results["table"])
    # The CPU a cold datepin spends on an install is read from its own process.
    cold_cpu = results["e2e"]["uv"]["cpu_s"]["cold"]
    assert cold_cpu["proxy"] > 0 and cold_cpu["client"] > 0 and "upstream" in cold_cpu
    # uv's own account of its phases, read from what it prints, for every mode.
    for mode, phases in results["e2e"]["uv"]["phases_s"].items():
        assert phases.keys() == {"resolve", "prepare", "install"}, mode
        assert phases["resolve"] > 0 and phases["prepare"] > 0 and phases["install"] >= 0, mode
    assert "uv install, cold: resolve, against relay keeping files" in figures
    # A cold page's CPU, read from each proxy's own process.
    assert results["cold_pages"]["datepin_cpu_ms"] > 0
    assert "cold page: proxy CPU, against aiohttp relay" in figures
    assert "p50, c=1" in proc.stdout  # the table was printed
    assert not (tmp_path / "work").exists()  # data dirs and venvs cleaned up
