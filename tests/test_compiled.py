"""The optional mypyc build of the domain (supplyflow.compiled, `make compile`).

Unmarked tests run in `make test` on the pure-Python default and need no C compiler: the
sources can always be chosen, setup.py compiles nothing unless asked, and a stale or
partial build is refused (on fake extension files). Tests marked ``compiled`` need the
build (`make test-compiled` makes it, then runs them with the exactness tests).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from supplyflow.compiled import (
    COMPILED,
    SHARED_LIBRARY,
    CompiledBuildError,
    build_problems,
    check_build,
    compiled_in_use,
    domain_status,
    extension_files,
)

ROOT = Path(__file__).resolve().parents[1]
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]
DIGEST_CODE = (
    "import json; from bench.domain import SMOKE_SCALE, time_domain; "
    "print(json.dumps(time_domain(SMOKE_SCALE, 11)))"
)


def _setup_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("supplyflow_setup", ROOT / "setup.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )


def _fake_checkout(tmp_path: Path) -> Path:
    """A checkout's layout (pyproject.toml, src/supplyflow/...) with every compiled
    module's source; returns the package dir."""
    (tmp_path / "pyproject.toml").write_text("")
    package = tmp_path / "src" / "supplyflow"
    for module in COMPILED:
        source = package.joinpath(*module.split(".")[1:]).with_suffix(".py")
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_text("")
        os.utime(source, (1_000_000, 1_000_000))
    return package


def _build(package: Path, modules: tuple[str, ...], mtime: float = 2_000_000) -> None:
    extensions = [
        package.joinpath(*m.split(".")[1:-1], m.rsplit(".")[-1] + SUFFIX) for m in modules
    ]
    for ext in [*extensions, package / (SHARED_LIBRARY + SUFFIX)]:
        ext.write_bytes(b"")
        os.utime(ext, (mtime, mtime))


def test_the_sources_run_when_asked_whatever_is_built() -> None:
    code = "import json; from supplyflow.compiled import domain_status as s; print(json.dumps(s()))"
    out = _python(code, SUPPLYFLOW_COMPILED="0")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == dict.fromkeys(COMPILED, False)


def test_compiled_modules_are_pure_domain_modules_with_sources() -> None:
    for module in COMPILED:
        layer = module.split(".")[1]
        assert layer in ("tables", "codecs"), module
        assert (ROOT / layer / (module.rsplit(".")[-1] + ".py")).is_file(), module
    assert "supplyflow.codecs.events" not in COMPILED  # pydantic models stay interpreted


def test_setup_compiles_nothing_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    setup = _setup_module()
    assert setup._compiled_modules() == COMPILED
    monkeypatch.delenv("SUPPLYFLOW_COMPILE", raising=False)
    assert setup._ext_modules() == []  # no mypyc, no C compiler


def test_no_build_is_nothing_to_check(tmp_path: Path) -> None:
    package = _fake_checkout(tmp_path)
    assert build_problems(package) == []
    check_build(package)


def test_a_complete_current_build_passes(tmp_path: Path) -> None:
    package = _fake_checkout(tmp_path)
    _build(package, COMPILED)
    assert all(extension_files(package).values())
    assert build_problems(package) == []
    check_build(package)


def test_a_build_older_than_a_source_is_refused(tmp_path: Path) -> None:
    package = _fake_checkout(tmp_path)
    _build(package, COMPILED)
    os.utime(package / "tables" / "po.py", (3_000_000, 3_000_000))  # edited after the build
    assert build_problems(package) == [f"po{SUFFIX} is older than po.py"]
    with pytest.raises(CompiledBuildError, match=r"po.* is older than po\.py") as caught:
        check_build(package)
    assert "make compile" in str(caught.value)
    assert "make uncompile" in str(caught.value)


def test_a_partial_build_is_refused(tmp_path: Path) -> None:
    package = _fake_checkout(tmp_path)
    _build(package, COMPILED[:-1])
    assert build_problems(package) == [f"{COMPILED[-1]} is not compiled"]
    with pytest.raises(CompiledBuildError, match="make compile"):
        check_build(package)


def test_an_installed_package_is_not_checked(tmp_path: Path) -> None:
    package = _fake_checkout(tmp_path)
    (tmp_path / "pyproject.toml").unlink()  # site-packages/supplyflow: no checkout around it
    _build(package, COMPILED[:2], mtime=1)
    assert build_problems(package)
    check_build(package)


@pytest.mark.compiled
def test_the_build_is_in_use() -> None:
    assert build_problems() == []
    assert domain_status() == dict.fromkeys(COMPILED, True), "run `make compile` first"
    assert compiled_in_use()


@pytest.mark.compiled
def test_compiled_and_pure_compute_the_same_positions() -> None:
    runs = {}
    for flag in ("0", "1"):
        out = _python(DIGEST_CODE, SUPPLYFLOW_COMPILED=flag)
        assert out.returncode == 0, out.stderr
        runs[flag] = json.loads(out.stdout)
    assert runs["0"]["compiled"] is False
    assert runs["1"]["compiled"] is True
    assert runs["0"]["events"] == runs["1"]["events"] > 400
    assert runs["0"]["digest"] == runs["1"]["digest"]


@pytest.mark.compiled
def test_importing_a_stale_build_fails_with_what_to_run() -> None:
    source = ROOT / "tables" / "po.py"
    before = source.stat()
    try:
        os.utime(source, (before.st_atime + 3600, before.st_mtime + 3600))
        out = _python("import supplyflow.tables.po")
        assert out.returncode != 0
        assert "CompiledBuildError" in out.stderr
        assert "is older than po.py" in out.stderr
        assert "`make compile`" in out.stderr
        assert "`make uncompile`" in out.stderr
    finally:
        os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert build_problems() == []
