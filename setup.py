"""Optional mypyc build of the domain (``make compile``); plain Python otherwise.

All metadata is in pyproject.toml. With ``SUPPLYFLOW_COMPILE=1`` the pure modules of the
PO/order/position domain (:data:`COMPILED` in ``supplyflow.compiled``) are compiled with
mypyc into C extensions next to their sources; without it (the default, and what every
``pip install`` does) nothing is compiled and no C compiler is needed.
"""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path
from typing import Any

from setuptools import setup

ROOT = Path(__file__).resolve().parent


def _compiled_modules() -> tuple[str, ...]:
    """``COMPILED`` of src/supplyflow/compiled.py, read without importing the package."""
    tree = ast.parse((ROOT / "src" / "supplyflow" / "compiled.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and ast.unparse(node.target) == "COMPILED":
            assert node.value is not None
            return tuple(ast.literal_eval(node.value))
    raise RuntimeError("src/supplyflow/compiled.py defines no COMPILED")


def _ext_modules() -> list[Any]:
    if os.environ.get("SUPPLYFLOW_COMPILE", "") not in {"1", "true", "yes"}:
        return []
    from mypyc.build import mypycify  # noqa: PLC0415 - only a compiling build needs mypy

    paths = ["src/" + module.replace(".", "/") + ".py" for module in _compiled_modules()]
    print(f"mypyc: compiling {len(paths)} modules", file=sys.stderr)
    # One shared library inside the package (supplyflow/_domain__mypyc.*.so), so an
    # editable install, a wheel and `python -I` all find it where they find supplyflow.
    return mypycify(paths, group_name="supplyflow._domain", opt_level="3")


if __name__ == "__main__":  # how pip (setuptools.build_meta) and `make compile` run it
    setup(ext_modules=_ext_modules())
