"""The package is importable as supplyflow.* only, in editable and in normal installs."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("app", "agents", "tables", "codecs")


def test_subpackages_live_in_the_top_level_folders() -> None:
    import supplyflow.agents
    import supplyflow.app
    import supplyflow.codecs
    import supplyflow.tables

    for module in (supplyflow.app, supplyflow.agents, supplyflow.tables, supplyflow.codecs):
        name = module.__name__.rsplit(".", 1)[1]
        assert Path(module.__file__ or "").resolve() == ROOT / name / "__init__.py"


def test_stdlib_codecs_is_not_shadowed() -> None:
    code = (
        "import codecs, supplyflow.codecs; "
        "print(codecs.__file__); print(codecs.lookup('utf-8').name)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert "supplyflow" not in out[0]
    assert out[1] == "utf-8"


def test_normal_install_contains_the_namespaced_packages(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("supplyflow-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for sub in SUBPACKAGES:
        assert f"supplyflow/{sub}/__init__.py" in names
    assert "supplyflow/py.typed" in names
    assert "supplyflow/app/local_kafka/pom.xml" in names
    top_level = {n.split("/", 1)[0] for n in names if not n.startswith("supplyflow-")}
    assert top_level == {"supplyflow"}
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    code = "import supplyflow.codecs, supplyflow.app.settings; print(supplyflow.codecs.__file__)"
    out = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            f"import sys; sys.path.insert(0, {str(target)!r}); "
            f"sys.path.extend({sys.path!r}); {code}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out.startswith(str(target))


#: What each layer may import of supplyflow (``app`` may import everything): the arrows of
#: the README's "Layout" point one way, app -> agents -> runtime/tables -> codecs.
ALLOWED_IMPORTS = {
    "supplyflow.codecs": ("supplyflow.codecs", "supplyflow.errors"),
    "supplyflow.tables": ("supplyflow.tables", "supplyflow.codecs", "supplyflow.errors"),
    "supplyflow.agents.runtime": (
        "supplyflow.agents.runtime",
        "supplyflow.codecs",
        "supplyflow.errors",
    ),
    "supplyflow.agents": (
        "supplyflow.agents",
        "supplyflow.tables",
        "supplyflow.codecs",
        "supplyflow.errors",
    ),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(("supplyflow", *(parts[:-1] if parts[-1] == "__init__" else parts)))


def _imports(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """Every module ``source`` (of ``module``) imports, also inside functions and
    ``TYPE_CHECKING`` blocks, relative imports resolved."""
    import ast

    package = module if is_package else module.rsplit(".", 1)[0]
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            if not node.level:
                name = node.module or ""
            else:
                name = f"{base}.{node.module}" if node.module else base
            found.append(name)
            found.extend(f"{name}.{alias.name}" for alias in node.names)
    return found


def _layer(module: str) -> str:
    layers = [layer for layer in ALLOWED_IMPORTS if f"{module}.".startswith(f"{layer}.")]
    return max(layers, key=len)


def _wrong_imports(source: str, module: str, *, is_package: bool = False) -> list[str]:
    allowed = ALLOWED_IMPORTS[_layer(module)]
    return [
        name
        for name in _imports(source, module, is_package=is_package)
        if name.startswith("supplyflow.")
        and not any(f"{name}.".startswith(f"{ok}.") for ok in allowed)
    ]


def test_nothing_below_app_imports_app_and_every_arrow_points_down() -> None:
    wrong = []
    for folder in ("agents", "tables", "codecs"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            source = path.read_text(encoding="utf-8")
            module = _module_name(path)
            for name in _wrong_imports(source, module, is_package=path.name == "__init__.py"):
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert wrong == []


def test_the_import_check_sees_relative_nested_and_upward_imports() -> None:
    source = (
        "from supplyflow.codecs import DecodeError\n"
        "from . import outbox\n"
        "from ..ingest import decode_batch\n"
        "def f() -> None:\n"
        "    import supplyflow.app.settings\n"
        "if TYPE_CHECKING:\n"
        "    from supplyflow.tables.po import PoState\n"
    )
    module = "supplyflow.agents.runtime.reader"
    assert "supplyflow.agents.runtime.outbox" in _imports(source, module)
    assert _wrong_imports(source, module) == [
        "supplyflow.agents.ingest",
        "supplyflow.agents.ingest.decode_batch",
        "supplyflow.app.settings",
        "supplyflow.tables.po",
        "supplyflow.tables.po.PoState",
    ]
    assert _wrong_imports("from supplyflow.agents import topics\n", "supplyflow.tables.po") == [
        "supplyflow.agents",
        "supplyflow.agents.topics",
    ]
