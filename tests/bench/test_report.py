"""The generated section of docs/benchmarks.md: rebuilt from a report, links that resolve."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Final

import pytest

from bench.report import SECTION_BEGIN, SECTION_END, latest_report, update_page

ROOT: Final = Path(__file__).resolve().parents[2]
RESULTS: Final = ROOT / "bench" / "results"
PAGE: Final = ROOT / "docs" / "benchmarks.md"
_LINK: Final = re.compile(r"\]\(([^)\s]+)\)")


def _copy_report(report: Path, into: Path) -> Path:
    """The report's JSON and plots, copied into ``into``."""
    into.mkdir(parents=True)
    for path in report.parent.glob(f"{report.stem}*"):
        shutil.copy(path, into / path.name)
    return into / report.name


def _section(text: str) -> str:
    return text.split(SECTION_BEGIN, 1)[1].split(SECTION_END, 1)[0]


def test_page_section_is_generated_from_the_newest_complete_report(tmp_path: Path) -> None:
    """The committed page holds exactly what ``python -m bench readme`` writes."""
    page = tmp_path / "docs" / "benchmarks.md"
    page.parent.mkdir()
    shutil.copy(PAGE, page)
    report = _copy_report(latest_report(RESULTS), tmp_path / "bench" / "results")
    update_page(page, report)
    assert _section(page.read_text()) == _section(PAGE.read_text()), (
        "docs/benchmarks.md's generated section is out of date: run `python -m bench readme`"
    )


def test_links_are_relative_to_the_page_and_resolve(tmp_path: Path) -> None:
    page = tmp_path / "docs" / "benchmarks.md"
    page.parent.mkdir()
    page.write_text(f"# before\n\n{SECTION_BEGIN}\nold\n{SECTION_END}\n\nafter\n")
    report = _copy_report(latest_report(RESULTS), tmp_path / "elsewhere" / "results")
    update_page(page, report)
    text = page.read_text()
    assert text.startswith("# before\n\n")
    assert text.endswith("\n\nafter\n")
    assert "\nold\n" not in text
    links = _LINK.findall(_section(text))
    assert len(links) == 3, links  # two plots and the JSON
    for link in links:
        assert link.startswith("../elsewhere/results/"), link
        assert (page.parent / link).is_file(), link


def test_a_page_without_the_markers_is_refused(tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text("# no generated section\n")
    with pytest.raises(ValueError, match="bench:begin"):
        update_page(page, latest_report(RESULTS))
    assert page.read_text() == "# no generated section\n"


def test_the_throughput_part_reports_the_30_day_backfill_at_each_rate() -> None:
    from bench.report import markdown

    def result(key: str, name: str, rate: int) -> dict[str, object]:
        return {"key": key, "name": name, "events": 1000, "seconds": 1.0, "events_per_s": rate}

    part = {
        "records": 1000,
        "scale": 0.01,
        "sku_locations": 1000,
        "results": [result("ceiling", "ceiling", 100_000), result("sf1", "1 worker", 25_000)],
        "ratios": {
            "supplyflow_1_vs_naive": 5.0,
            "supplyflow_1_vs_ceiling": 0.25,
            "supplyflow_2_vs_1": 1,
        },
        "backfill_events": 4_500_000,
        "backfill_minutes": {"1 worker": 3.0},
    }
    report = {"mode": "smoke", "date": "2026-12-05T00:00:00", "host": "h", "cpus": 2}
    report |= {"bootstrap": "b", "wall_seconds": 1.0, "command": "c", "throughput": part}
    text = markdown(report)
    assert (
        "A 30-day backfill of this profile (4,500,000 events) at these rates: 1 worker: 3 min."
        in text
    )
