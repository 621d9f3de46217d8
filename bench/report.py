"""A run's report: JSON, a Markdown table, PNG plots, and the generated section of
``docs/benchmarks.md``.

Everything here is computed from the JSON report, so that page's tables can be rebuilt
from any saved run with ``python -m bench readme``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Final

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI

import matplotlib.pyplot as plt
import orjson

__all__ = ["SECTION_BEGIN", "SECTION_END", "latest_report", "markdown", "update_page", "write"]

#: The generated section of the page (``docs/benchmarks.md``) lies between these lines.
SECTION_BEGIN: Final = "<!-- bench:begin (python -m bench readme) -->"
SECTION_END: Final = "<!-- bench:end -->"
_MIB: Final = 1 << 20


def _n(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}{unit}" if abs(value) >= 100 else f"{value:,.1f}{unit}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _throughput_md(part: dict[str, Any]) -> list[str]:
    results = {r["key"]: r for r in part["results"]}
    ceiling = results["ceiling"]["events_per_s"]
    # Reports from 2026-12-05 on: CPU of the worker processes per record.
    cpu = any("worker_cpu_us_per_event" in r for r in part["results"])
    lines = [
        f"**Throughput**: {part['records']:,} records (distributor workload at scale "
        f"{part['scale']}, {part['sku_locations']:,} SKU-locations), all produced before "
        "any pipeline reads them.",
        "",
        "| pipeline | events | seconds | events/s | of ceiling | positions exact |"
        + (" worker CPU µs/event |" if cpu else ""),
        "|---|---:|---:|---:|---:|---|" + ("---:|" if cpu else ""),
    ]
    notes = []
    for r in part["results"]:
        exact = {True: "yes", False: f"NO ({r.get('positions_wrong')} wrong)", None: "-"}
        share = r["events_per_s"] / ceiling if ceiling else None
        mark = ""
        if r.get("note"):
            notes.append(r["note"])
            mark = f" ({len(notes)})"
        rate = f"{r['events_per_s']:,}" if r["events"] else "-"
        lines.append(
            f"| {r['name']}{mark} | {r['events']:,} | {r['seconds']:.1f} | {rate} "
            f"| {_pct(share) if r['events'] else '-'} | {exact[r.get('exact')]} |"
            + (f" {r.get('worker_cpu_us_per_event', '-')} |" if cpu else "")
        )
    lines += [f"\n({i + 1}) {note}" for i, note in enumerate(notes)]
    ratios = part["ratios"]
    lines += [
        "",
        f"supplyflow, 1 worker: {ratios['supplyflow_1_vs_naive']}x the naive Faust agent, "
        f"{_pct(ratios['supplyflow_1_vs_ceiling'])} of the ceiling; 2 workers: "
        f"{ratios['supplyflow_2_vs_1']}x one worker.",
    ]
    if ratios.get("routed_vs_murmur2") is not None:
        lines.append(
            f"Input partitioned by CRC32 (librdkafka's default), routed to the partitions that "
            f"own the keys: {ratios['routed_vs_murmur2']}x the throughput of murmur2-partitioned "
            "input."
        )
    if ratios.get("supplyflow_1x2_vs_1") is not None:
        lines.append(
            f"One `supplyflow worker --processes 2` (a supervisor, two worker processes): "
            f"{ratios['supplyflow_1x2_vs_1']}x one worker process."
        )
    backfill = part.get("backfill_minutes")
    if backfill:
        rates = "; ".join(f"{name}: {minutes:g} min" for name, minutes in backfill.items())
        lines.append(
            f"A 30-day backfill of this profile ({part['backfill_events']:,} events) at these "
            f"rates: {rates}."
        )
    return lines


def _processes_md(part: dict[str, Any]) -> list[str]:
    medians = part["median_events_per_s"]
    lines = [
        f"**Processes**: one `supplyflow worker` with 1 and with 2 processes "
        f"(`--processes 2`), alternated over {part['rounds']} rounds, each run on its own "
        f"copy of the same {part['records']:,} records (scale {part['scale']}):",
        "",
        "| round | processes | seconds | events/s | positions exact |",
        "|---:|---:|---:|---:|---|",
    ]
    for r in part["runs"]:
        exact = "yes" if r["exact"] else f"NO ({r['positions_wrong']} wrong)"
        lines.append(
            f"| {r['round']} | {r['processes']} | {r['seconds']:.1f} | {r['events_per_s']:,} "
            f"| {exact} |"
        )
    lines += [
        "",
        f"Median: {medians['1']:,} events/s with 1 process, {medians['2']:,} with 2: "
        f"{part['speedup']}x.",
    ]
    return lines


def _one_worker(part: dict[str, Any]) -> str:
    processes = part.get("processes", 1)
    return "one worker" if processes == 1 else f"one `supplyflow worker --processes {processes}`"


def _latency_md(part: dict[str, Any]) -> list[str]:
    lines = [
        f"**Latency**, `occurred_at` to position emitted, {_one_worker(part)}, each load for "
        f"{part['load_seconds']:.0f} s (last change per position, from Kafka timestamps; the "
        "worker's own histogram beside it):",
        "",
        "| offered events/s | sent events/s | positions | p50 ms | p99 ms | max ms "
        "| histogram p50 / p99 ms | drained |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in part["steps"]:
        hist = f"{_n(s['worker_histogram_p50_ms'])} / {_n(s['worker_histogram_p99_ms'])}"
        lines.append(
            f"| {s['offered_per_s']:,} | {s['achieved_per_s']:,} | {s['samples']:,} "
            f"| {_n(s['p50_ms'])} | {_n(s['p99_ms'])} | {_n(s['max_ms'])} | {hist} "
            f"| {'yes' if s['drained'] else 'no'} |"
        )
    if all("worker_cpu_share" in s for s in part["steps"]):  # reports from 2026-11-27 on
        lines += [
            "",
            "Where it goes: the two hops of a PO or order event (positions whose last change "
            "came through the deltas topic), the worker's CPU share from the first record "
            "sent until it drained, and the position changelog records (states and progress "
            "markers) it wrote per event:",
            "",
            "| offered events/s | input → deltas p50 / p99 ms | deltas → position p50 / p99 ms "
            "| worker CPU (one core: 100%) | position writes per event |",
            "|---:|---:|---:|---:|---:|",
        ]
        for s in part["steps"]:
            first = f"{_n(s['input_to_deltas_p50_ms'])} / {_n(s['input_to_deltas_p99_ms'])}"
            second = f"{_n(s['deltas_to_position_p50_ms'])} / {_n(s['deltas_to_position_p99_ms'])}"
            lines.append(
                f"| {s['offered_per_s']:,} | {first} | {second} "
                f"| {_pct(s['worker_cpu_share'])} | {s['position_changelog_per_event']} |"
            )
    return lines


def _state_md(part: dict[str, Any], mode: str) -> list[str]:
    note = (
        ""
        if part["sku_locations"] >= 1_000_000
        else f" ({mode} mode: scaled down from 1,000,000 SKU-locations and 100,000 open POs)"
    )
    keys = part["table_keys"]
    rebuilt = part["rebuild_table_keys"]
    return [
        f"**State** of one worker{note}:",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| SKU-locations / open POs / sales orders | {part['sku_locations']:,} / "
        f"{part['open_pos']:,} / {part['orders']:,} |",
        f"| records processed (seconds) | {part['records']:,} ({_n(part['ingest_seconds'])}) |",
        f"| table keys po / order / position (RocksDB estimates) | {keys.get('po', 0):,} / "
        f"{keys.get('order', 0):,} / {keys.get('position', 0):,} |",
        f"| worker RSS right after processing / at rest | {_mib(part['rss_bytes'])} / "
        f"{_mib(part.get('rss_rest_bytes'))} |",
        f"| state on disk | {part['disk_bytes'] / _MIB:,.1f} MiB |",
        f"| restart with local state to /health ready | {part['restart_seconds']:.1f} s |",
        f"| rebuild from changelogs (data dir deleted) to ready | "
        f"{part['rebuild_seconds']:.1f} s |",
        f"| after rebuild: keys po / order / position | {rebuilt.get('po', 0):,} / "
        f"{rebuilt.get('order', 0):,} / {rebuilt.get('position', 0):,} |",
        f"| after rebuild: RSS when ready / at rest | {_mib(part['rebuild_rss_bytes'])} / "
        f"{_mib(part.get('rebuild_rss_rest_bytes'))} |",
    ]


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / _MIB:,.0f} MiB"


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables, one per part that ran."""
    lines = [
        f"Mode **{report['mode']}**, {report['date'][:19]}Z, host `{report['host']}` "
        f"({report['cpus']} CPUs), Kafka at {report['bootstrap']}, "
        f"{report['wall_seconds']:.0f} s wall time. Reproduce: `{report['command']}`.",
    ]
    if "throughput" in report:
        lines += ["", *_throughput_md(report["throughput"])]
    if "latency" in report:
        lines += ["", *_latency_md(report["latency"])]
    if "state" in report:
        lines += ["", *_state_md(report["state"], report["mode"])]
    if "processes" in report:
        lines += ["", *_processes_md(report["processes"])]
    return "\n".join(lines) + "\n"


def _plot_throughput(part: dict[str, Any], path: Path) -> None:
    names = [r["name"].replace(" (", "\n(") for r in part["results"]]
    rates = [r["events_per_s"] for r in part["results"]]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    bars = ax.barh(
        names, [max(r, 1) for r in rates], color=["#999999", "#cc8844", "#3366aa", "#224477"]
    )
    ax.bar_label(bars, labels=[f"{r:,}" if r else "not measured" for r in rates], padding=3)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlim(1, max([*rates, 10]) * 4)  # room for the labels
    ax.set_xlabel("events/s (log scale)")
    ax.set_title(f"Throughput, {part['records']:,} records, same input")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_latency(part: dict[str, Any], path: Path) -> None:
    steps = [s for s in part["steps"] if s["p50_ms"] is not None]
    loads = [s["offered_per_s"] for s in steps]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(loads, [s["p50_ms"] for s in steps], "o-", label="p50")
    ax.plot(loads, [s["p99_ms"] for s in steps], "s-", label="p99")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered load, events/s")
    ax.set_ylabel("occurred_at to position emitted, ms")
    ax.set_title("Latency vs load, one worker")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write ``<stem>.json``, ``.md`` and the plots into ``out``; returns them by kind."""
    out.mkdir(parents=True, exist_ok=True)
    stem = report["stem"]
    files = {"json": out / f"{stem}.json", "markdown": out / f"{stem}.md"}
    files["json"].write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    files["markdown"].write_text(markdown(report))
    if "throughput" in report:
        files["throughput_png"] = out / f"{stem}-throughput.png"
        _plot_throughput(report["throughput"], files["throughput_png"])
    if "latency" in report:
        files["latency_png"] = out / f"{stem}-latency.png"
        _plot_latency(report["latency"], files["latency_png"])
    return files


def latest_report(results: Path) -> Path:
    """The newest complete report (every part) in ``results``."""
    complete = []
    for path in sorted(results.glob("*.json")):
        report = orjson.loads(path.read_bytes())
        if all(part in report for part in ("throughput", "latency", "state")):
            complete.append((report["date"], path))
    if not complete:
        raise FileNotFoundError(
            f"no complete benchmark report in {results}: run `make bench` (or `make bench-quick`)"
        )
    return max(complete)[1]


def update_page(page: Path, report_path: Path) -> None:
    """Replace the generated benchmark section of ``page`` with ``report_path``'s tables.

    Links to the report's files are relative to the page's folder, so they resolve
    wherever the page sits in the repository (``docs/benchmarks.md``: ``../bench/...``).
    """
    report = orjson.loads(report_path.read_bytes())
    text = page.read_text()
    if SECTION_BEGIN not in text or SECTION_END not in text:
        raise ValueError(f"{page} has no {SECTION_BEGIN} ... {SECTION_END} section to replace")
    head, rest = text.split(SECTION_BEGIN, 1)
    _, tail = rest.split(SECTION_END, 1)
    shown = Path(os.path.relpath(report_path.parent.resolve(), page.parent.resolve())).as_posix()
    stem = report["stem"]
    body = [
        markdown(report),
        f"![throughput]({shown}/{stem}-throughput.png) ![latency]({shown}/{stem}-latency.png)",
        "",
        f"Full numbers: [`{shown}/{stem}.json`]({shown}/{stem}.json).",
    ]
    page.write_text(f"{head}{SECTION_BEGIN}\n{chr(10).join(body)}\n{SECTION_END}{tail}")
