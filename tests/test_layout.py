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
