"""The benchmark harness end to end at a tiny scale: it runs, and its outputs make sense.

Speed is not checked (a shared CI machine measures nothing reliable); that every part
ran, that the numbers are consistent with each other, and that the files exist is.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import orjson
import pytest

pytestmark = pytest.mark.integration

ROOT: Final = Path(__file__).resolve().parents[2]
#: The smoke plan takes about a minute on the idle 2-core development machine, two and a
#: half when other work shares it.
SMOKE_S: Final = 300.0
PNG_MAGIC: Final = b"\x89PNG\r\n\x1a\n"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _check_throughput(part: dict[str, Any]) -> None:
    results = {r["key"]: r for r in part["results"]}
    keys = [
        "ceiling",
        "naive",
        "supplyflow_1",
        "supplyflow_2",
        "supplyflow_1_routed",
        "supplyflow_1x2",
    ]
    assert list(results) == keys
    assert part["records"] > 1000
    for key in keys:
        r = results[key]
        assert r["events"] == part["records"], r
        assert r["seconds"] > 0, r
        # seconds are rounded to the millisecond in the report, the rate is not
        assert abs(r["events_per_s"] - r["events"] / r["seconds"]) <= r["events_per_s"] * 0.05 + 1
    for key in keys[2:]:
        assert results[key]["exact"] is True, results[key]  # positions equal the reference
        assert results[key]["worker_cpu_us_per_event"] >= 0, results[key]
    assert results["supplyflow_1"]["worker_cpu_us_per_event"] > 0
    assert 0 <= results["supplyflow_2"]["processed_before_group_complete"] <= part["records"]
    assert part["ratios"]["supplyflow_1_vs_ceiling"] == round(
        results["supplyflow_1"]["events_per_s"] / results["ceiling"]["events_per_s"], 3
    )
    assert part["ratios"]["supplyflow_1x2_vs_1"] == round(
        results["supplyflow_1x2"]["events_per_s"] / results["supplyflow_1"]["events_per_s"], 3
    )


def _check_latency(part: dict[str, Any], loads: int) -> None:
    steps = part["steps"]
    assert len(steps) == loads
    assert part["warm_up_records"] > 0
    for step in steps:
        assert step["drained"] is True, step
        assert step["sent"] == round(step["offered_per_s"] * part["load_seconds"])
        assert step["samples"] > 0, step
        assert step["samples"] <= step["positions_followed"]
        assert 0 <= step["p50_ms"] <= step["p99_ms"] <= step["max_ms"], step
        assert step["worker_histogram_p50_ms"] is not None, step
        # where the time goes: CPU of one process, changelog writes, the two hops
        assert 0 < step["worker_cpu_share"] <= (os.cpu_count() or 1) + 0.1, step
        assert step["position_changelog_per_event"] > 0, step
        assert step["via_deltas_samples"] <= step["samples"], step
        if step["via_deltas_samples"]:
            for hop in ("input_to_deltas", "deltas_to_position"):
                assert 0 <= step[f"{hop}_p50_ms"] <= step[f"{hop}_p99_ms"], step
    # PO and order events reach positions through the deltas topic at every load
    assert all(step["via_deltas_samples"] > 0 for step in steps), steps


def _check_state(part: dict[str, Any]) -> None:
    assert part["sku_locations"] == 500
    assert 0 < part["open_pos"] <= part["pos"]
    assert part["records"] > 1000
    assert part["rss_bytes"] > 20 * 2**20  # a Python worker with Faust is never this small
    assert part["disk_bytes"] > 0
    assert part["rebuild_disk_bytes"] > 0
    assert part["table_keys"]["position"] > 0
    assert part["rebuild_table_keys"]["position"] > 0
    assert 0 < part["restart_seconds"] < 180
    assert 0 < part["rebuild_seconds"] < 180


def test_bench_smoke_writes_json_markdown_and_plots(bootstrap: str, tmp_path: Path) -> None:
    out = tmp_path / "results"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "all", "--smoke", "--out", str(out)],
        cwd=ROOT,
        env={**os.environ, "SUPPLYFLOW_BOOTSTRAP": bootstrap},
        capture_output=True,
        text=True,
        timeout=SMOKE_S,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    (report_path,) = out.glob("*.json")
    report = orjson.loads(report_path.read_bytes())
    stem = report_path.stem
    assert stem == report["stem"]
    assert report["mode"] == "smoke"
    assert report["cpus"] >= 1
    assert report["wall_seconds"] > 0
    _check_throughput(report["throughput"])
    _check_latency(report["latency"], len(report["plan"]["loads"]))
    _check_state(report["state"])

    table = (out / f"{stem}.md").read_text()
    assert "| pipeline | events | seconds | events/s |" in table
    assert "| offered events/s |" in table
    assert "| offered events/s | input → deltas p50 / p99 ms |" in table
    assert "restart with local state" in table
    assert table in result.stdout  # the run prints the same table
    for plot in ("throughput", "latency"):
        width, height = _png_size(out / f"{stem}-{plot}.png")
        assert width >= 400
        assert height >= 300

    # The benchmarks page's section is rebuilt from the report, not typed.
    page = tmp_path / "docs" / "benchmarks.md"
    page.parent.mkdir()
    shutil.copy(ROOT / "docs" / "benchmarks.md", page)
    result = subprocess.run(
        [sys.executable, "-m", "bench", "readme", "--out", str(out), "--page", str(page)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    text = page.read_text()
    assert table.strip() in text
    assert text.count("<!-- bench:begin") == 1
    assert f"](../{out.name}/{stem}-throughput.png)" in text, "links are relative to the page"


def test_bench_processes_alternates_one_and_two_processes(bootstrap: str, tmp_path: Path) -> None:
    out = tmp_path / "results"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "processes", "--smoke", "--rounds", "2", "--out", str(out)],
        cwd=ROOT,
        env={**os.environ, "SUPPLYFLOW_BOOTSTRAP": bootstrap},
        capture_output=True,
        text=True,
        timeout=SMOKE_S,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    (report_path,) = out.glob("*.json")
    part = orjson.loads(report_path.read_bytes())["processes"]
    assert [(r["round"], r["processes"]) for r in part["runs"]] == [(1, 1), (1, 2), (2, 2), (2, 1)]
    for run in part["runs"]:
        assert run["events"] == part["records"] > 1000
        assert run["exact"] is True, run
    medians = part["median_events_per_s"]
    for n in ("1", "2"):
        rates = sorted(r["events_per_s"] for r in part["runs"] if str(r["processes"]) == n)
        assert medians[n] == round(sum(rates) / 2)  # the median of two runs
    assert part["speedup"] == round(medians["2"] / medians["1"], 3)
    assert "| round | processes | seconds | events/s | positions exact |" in result.stdout
