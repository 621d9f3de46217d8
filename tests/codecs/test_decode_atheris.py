"""300,000 coverage-guided cases through the decoder (atheris), from the sample corpus."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Final

#: libFuzzer runs: ~3 s on a 2-core machine (most inputs fail fast, as hostile ones do).
RUNS: Final = 300_000
HARNESS: Final = Path(__file__).with_name("atheris_decode.py")
#: A wedged fuzzer must not hold the suite for the global 600 s timeout.
TIMEOUT_S: Final = 300


def test_atheris_finds_no_input_that_escapes_decode_error(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    seeds = subprocess.run(
        [sys.executable, str(HARNESS), "--write-seeds", str(corpus)],
        capture_output=True,
        text=True,
        check=False,
        timeout=TIMEOUT_S,
    )
    assert seeds.returncode == 0, seeds.stderr
    assert int(seeds.stdout.split()[-1]) >= 20
    done = subprocess.run(
        [
            sys.executable,
            str(HARNESS),
            str(corpus),
            f"-runs={RUNS}",
            "-max_len=8192",
            f"-artifact_prefix={tmp_path}/",
            "-print_final_stats=1",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=TIMEOUT_S,
    )
    crashes = sorted(tmp_path.glob("crash-*"))
    found = "\n".join(f"{c.name}: {c.read_bytes()[:300]!r}" for c in crashes)
    assert done.returncode == 0, f"{found}\n{done.stderr[-4000:]}"
    assert f"Done {RUNS} runs" in done.stderr, done.stderr[-2000:]
