"""The status page of a running worker, in a real headless Chromium (Debian's)."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import orjson
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from supplyflow.app.processes import WorkerProcess
from supplyflow.app.produce import produce_records
from supplyflow.app.sample import SampleRecord
from supplyflow.app.settings import Settings

pytestmark = pytest.mark.integration

CHROMIUM: Final = "/usr/bin/chromium"
CHROMEDRIVER: Final = "/usr/bin/chromedriver"
WORKER_READY_S: Final = 90.0
#: The page refreshes every 3 s; the deadline fires 2 s + grace after the PO is created.
PAGE_WAIT_S: Final = 30.0
ARTIFACTS: Final = Path(__file__).resolve().parents[2] / "build" / "artifacts"


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if missing:
        pytest.fail(
            f"{missing} not installed: run `make system-deps` (Debian chromium, chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _po(run: str, n: int, po_id: str) -> SampleRecord:
    body = {
        "event_id": f"{run}-{n}",
        "type": "po.created",
        "schema_version": 1,
        "source": "procurement",
        "occurred_at": datetime.now(UTC).isoformat(),
        "data": {
            "po_id": po_id,
            "revision": 1,
            "supplier_id": "S",
            "location": "DC1",
            "lines": [{"line_no": 1, "sku": "SKU-9", "qty": 12}],
        },
    }
    return SampleRecord("po.events", po_id.encode(), orjson.dumps(body))


def test_status_page_shows_an_open_exception_and_looks_up_a_po(
    bootstrap: str,
    names: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
    browser: webdriver.Chrome,
) -> None:
    worker = start_worker(SUPPLYFLOW_SLA_PO_ACK="wms=2s", SUPPLYFLOW_DEADLINE_GRACE="1s")
    worker.wait_healthy(WORKER_READY_S)
    settings = Settings(
        bootstrap=bootstrap, topic_prefix=names["prefix"], app_id=names["app_id"], partitions=4
    )
    po_id = f"{names['app_id']}-PO-17"
    asyncio.run(produce_records(settings, [_po(names["app_id"], 1, po_id)]))

    browser.get(worker.url + "/")
    wait = WebDriverWait(browser, PAGE_WAIT_S)
    wait.until(expected_conditions.text_to_be_present_in_element((By.ID, "health"), "running"))
    row = wait.until(
        expected_conditions.presence_of_element_located(
            (By.CSS_SELECTOR, f'tr.exception[data-entity="{po_id}"]')
        )
    )
    assert "wms has not acknowledged" in row.text
    assert "ACK_MISSING" in browser.find_element(By.ID, "exceptions").text

    search = browser.find_element(By.ID, "search")
    search.clear()
    search.send_keys(po_id)
    browser.find_element(By.ID, "go").click()
    wait.until(
        expected_conditions.text_to_be_present_in_element((By.ID, "result"), '"revision": 1')
    )
    result = browser.find_element(By.ID, "result").text
    assert po_id in result
    assert "SKU-9" in result
    wait.until(expected_conditions.presence_of_element_located((By.ID, "rate-applied")))

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "status-page.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")
    assert os.path.exists(shot)
