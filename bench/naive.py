"""The usual way, for comparison: a Faust agent that decodes each record and writes one
table key per event (a per-SKU@location counter), with Faust's defaults otherwise.

Run as ``python -m bench.naive`` with ``BENCH_BOOTSTRAP``, ``BENCH_PREFIX``, ``BENCH_APP_ID``,
``BENCH_DATA_DIR`` set; prints ``processed <n>`` lines that the benchmark reads.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import faust

from supplyflow.app.processes import free_port
from supplyflow.codecs import DecodeError, decode_input

TOPICS = ("po.events", "order.events", "inventory.events")


def main() -> None:
    prefix = os.environ["BENCH_PREFIX"]
    app = faust.App(
        os.environ["BENCH_APP_ID"],
        broker=f"kafka://{os.environ['BENCH_BOOTSTRAP']}",
        store="rocksdb://",
        datadir=os.environ["BENCH_DATA_DIR"],
        web_enabled=False,
        # Faust's worker binds its web server all the same: never the default 6066,
        # which another worker or benchmark on the machine may hold.
        web_bind="127.0.0.1",
        web_port=free_port(),
        topic_partitions=int(os.environ.get("BENCH_PARTITIONS", "8")),
    )
    counts = app.Table("naive_counts", default=int)
    processed = 0

    for name in TOPICS:
        topic = app.topic(prefix + name, key_serializer="raw", value_serializer="raw")

        @app.agent(topic, name=f"naive-{name}")
        async def consume(stream: Any, name: str = name) -> None:
            nonlocal processed
            async for event in stream.events():
                message = event.message
                try:
                    decoded = decode_input(
                        name, message.key, message.value, message.headers, max_bytes=1 << 20
                    )
                except DecodeError:
                    decoded = None
                key = decoded.data.entity_key if decoded is not None else "invalid"
                counts[key] += 1
                processed += 1

    @app.timer(0.5)  # type: ignore[untyped-decorator]  # faust ships no types
    async def report() -> None:
        print(f"processed {processed}", flush=True)

    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    app.main()


if __name__ == "__main__":
    main()
