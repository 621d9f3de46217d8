"""Patch 5: the worker hooks no DEBUG-level spinner handler onto the root logger."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import faust
from faust.utils import terminal

from supplyflow.agents.runtime.faust.worker import new_worker


def test_a_worker_at_warning_level_adds_no_debug_handler(tmp_path: Path) -> None:
    app = faust.App("w", broker="kafka://127.0.0.1:1", datadir=str(tmp_path))
    loop = asyncio.new_event_loop()
    try:
        worker = new_worker(app, loop=loop, loglevel="warning")
        assert worker.spinner is None
        logger = logging.getLogger("supplyflow.tests.spinner")
        logger.addHandler(logging.NullHandler())
        # What Faust calls when it configures the root logger (its spinner would be kept
        # at WARNING and above, and hook a DEBUG handler onto the logger).
        worker.on_setup_root_logger(logger, logging.WARNING)
        assert not any(isinstance(h, terminal.SpinnerHandler) for h in logger.handlers)
        assert logger.level == logging.NOTSET
        faust_worker = faust.Worker(app, loop=loop, loglevel="warning", quiet=True)
        assert faust_worker.spinner is not None  # what the patch takes away
    finally:
        logging.getLogger("supplyflow.tests.spinner").handlers.clear()
        loop.close()
