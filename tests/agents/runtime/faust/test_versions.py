"""The patches load only on the Faust they were written for, and its code is unchanged."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import PackageNotFoundError
from typing import Any

import pytest

from supplyflow.agents.runtime.exceptions import FaustVersionError
from supplyflow.agents.runtime.faust import (
    consumer,
    private,
    recovery,
    rocksdb,
    streams,
    tables,
    web,
    worker,
)
from supplyflow.agents.runtime.faust.versions import WRITTEN_FOR, check_versions, source_hash

MODULES = (web, tables, worker, streams, recovery, consumer, rocksdb, private)

#: sha256 of the source of each Faust (and mode) function a patch replaces, copies or
#: depends on, in faust-streaming 0.15.3 and mode-streaming 0.7.1 (WRITTEN_FOR), keyed
#: "module: name" as in that module's ORIGINALS. A release that changes one fails here:
#: compare the patch with the new original (the module's docstring says what it does and
#: why), then update the hash, WRITTEN_FOR and the pins in pyproject.toml.
PINNED = {
    "web: Web._enabled_blueprints": (
        "0a5b53f233d4d571307c277d05c6740e139553d3ce923fe6c3830105a5cbe33e"
    ),
    "web: App._new_web": "9558ffdcacfa13bdfca5632f86d96901677c084bf2fe697bc7ef2162f9aa5a75",
    "tables: Collection._serializer_from_type": (
        "7f8374d921f00a98b4afd561a0bf6c66d27658ddabd34d74ce12a7779138d084"
    ),
    "tables: Collection._new_changelog_topic": (
        "77bea64b59f798094f8de7a939a2e159ae5cd55a0d1877728ef1e205fe7ef98c"
    ),
    "tables: Store._db_for_partition": (
        "cb7e67d5f9efc4bced7b7ab09a55fe717c352daad5b693594e3f7ca52a98787f"
    ),
    "tables: Store.set_persisted_offset": (
        "b4c811926678346ebb8c40486dbc46d0fbac2bbeaa592384bd955112556acf45"
    ),
    "worker: Worker._setup_spinner_handler": (
        "18cb28ef5b3de2127fac784ae258415ebba037159d97beaed3cb10e1c499c949"
    ),
    "streams: Stream.take_events": (
        "607d48aead118ba8ea868718a0df87de1c5fcecd10ec542c659b448796728e08"
    ),
    "recovery: Recovery.need_recovery": (
        "fd1dc345b5d5e12113adc510d40bc3d6594b2a9fb13e93f0fa8b761f5dd98600"
    ),
    "recovery: Recovery._slurp_changelogs": (
        "7825c7e50f766d5ab0fd246b63420ea0dfcd732d005f1057cc9da656ff5d3967"
    ),
    "consumer: Service.wait_first": (
        "feade6a31f8a67897cf687c54c66f5f4535288050bbaac07249ce2063d36ae2e"
    ),
    "consumer: Consumer._drain_messages": (
        "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417"
    ),
    "rocksdb: RocksDBOptions.as_options": (
        "d2a1bea17736d2eb2f8d2da592ef843f31bd9583b17b3fcbb2ebd84c15051660"
    ),
    "private: aiokafka.Producer._ensure_producer": (
        "5592a4bbdf2513253f98233a4eac931ded2a531a86f269cddcc33bc3f5827db5"
    ),
}


def _originals() -> dict[str, Any]:
    return {
        f"{module.__name__.rsplit('.', 1)[1]}: {name}": function
        for module in MODULES
        for name, function in module.ORIGINALS.items()
    }


@pytest.mark.parametrize("name", sorted(PINNED))
def test_the_faust_code_a_patch_relies_on_is_the_pinned_release(name: str) -> None:
    assert source_hash(_originals()[name]) == PINNED[name], (
        f"{name} changed in the installed Faust: check the patch in "
        "supplyflow/agents/runtime/faust/ against it, then update the hash"
    )


def test_every_original_a_patch_names_is_pinned() -> None:
    assert sorted(_originals()) == sorted(PINNED)


def test_another_release_stops_the_import_with_what_to_do() -> None:
    releases = {**WRITTEN_FOR, "faust-streaming": "0.16.0"}
    with pytest.raises(FaustVersionError) as raised:
        check_versions(releases.__getitem__)
    message = str(raised.value)
    assert "faust-streaming 0.16.0 is installed" in message
    assert "pip install 'faust-streaming==0.15.3' 'mode-streaming==0.7.1'" in message
    assert "WRITTEN_FOR" in message


def test_a_missing_distribution_is_named() -> None:
    def installed(name: str) -> str:
        if name == "mode-streaming":
            raise PackageNotFoundError(name)
        return WRITTEN_FOR[name]

    with pytest.raises(FaustVersionError, match="mode-streaming none is installed"):
        check_versions(installed)


def test_the_installed_releases_are_the_ones_written_for() -> None:
    check_versions()


def test_importing_the_patches_checks_the_releases() -> None:
    code = (
        "import importlib.metadata as metadata\n"
        "real = metadata.version\n"
        "metadata.version = lambda name: '0.7.2' if name == 'mode-streaming' else real(name)\n"
        "from supplyflow.errors import SupplyflowError\n"
        "try:\n"
        "    import supplyflow.agents.runtime.faust\n"
        "except SupplyflowError as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("FaustVersionError supplyflow's Faust patches were written for")
    assert "mode-streaming 0.7.2 is installed" in out


def test_pyproject_pins_the_releases_written_for() -> None:
    import tomllib
    from pathlib import Path

    pyproject = Path(__file__).resolve().parents[4] / "pyproject.toml"
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    for name, release in WRITTEN_FOR.items():
        assert f"{name}=={release}" in dependencies
