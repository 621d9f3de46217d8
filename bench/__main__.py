"""``python -m bench throughput [--scale S] [--bootstrap host:port]``."""

from __future__ import annotations

import argparse
import os

from bench.throughput import run


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    sub = parser.add_subparsers(dest="command", required=True)
    throughput = sub.add_parser("throughput", help="supplyflow vs naive Faust vs raw aiokafka")
    throughput.add_argument("--scale", type=float, default=1.0, help="x the default scenario")
    throughput.add_argument(
        "--bootstrap", default=os.environ.get("SUPPLYFLOW_BOOTSTRAP", "127.0.0.1:9092")
    )
    args = parser.parse_args()
    run(args.bootstrap, args.scale)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
