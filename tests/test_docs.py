"""The README and docs/ name only things that exist, and their links resolve.

The README is the front page: at most 250 lines, and every ``supplyflow`` command it
shows parses with the real CLI parser, every ``SUPPLYFLOW_*`` variable is a setting, and
every ``supplyflow_*`` metric is one a worker exports (names taken from the live code, not
a copied list). The pages under docs/ are held to the same variables and metrics, their
shell examples to the same parser, and every relative link (with its ``#anchor``) of
any of them must resolve.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
from prometheus_client import CollectorRegistry

from supplyflow.agents.metrics import Metrics
from supplyflow.app.cli import _parser
from supplyflow.app.metrics import StateProbes, WorkerCollector
from supplyflow.app.setting_types import CLIENT_OPTION_PREFIX, CLIENT_OPTIONS
from supplyflow.app.settings import ENV_PREFIX, Settings

ROOT: Final = Path(__file__).resolve().parents[1]
README: Final = ROOT / "README.md"
DOCS: Final = sorted((ROOT / "docs").glob("*.md"))
PAGES: Final = [README, *DOCS]
MAX_README_LINES: Final = 250

_FENCE: Final = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_INLINE: Final = re.compile(r"`([^`\n]+)`")
_VARIABLE: Final = re.compile(r"\bSUPPLYFLOW_[A-Z][A-Z0-9_]*\b")
_METRIC: Final = re.compile(r"\bsupplyflow_[a-z][a-z0-9_]*\b")
_LINK: Final = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_HEADING: Final = re.compile(r"^#{1,6}\s+(.*?)\s*$", re.MULTILINE)
_MAKE_TARGET: Final = re.compile(r"^([A-Za-z][\w-]*)\s*:(?!=)", re.MULTILINE)
#: Where a variable that is not a setting may be read (tools, tests, the local broker).
_CODE_DIRS: Final = ("app", "agents", "tables", "codecs", "bench", "tests")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _without_code_blocks(text: str) -> str:
    return _FENCE.sub("", text)


def _shell_blocks(text: str) -> list[str]:
    return [body for lang, body in _FENCE.findall(text) if lang in ("sh", "shell", "bash")]


def _command_lines(text: str, *, inline: bool) -> list[str]:
    """Shell lines of ``sh`` blocks (and, with ``inline``, code spans) that run a tool."""
    lines: list[str] = []
    for block in _shell_blocks(text):
        logical = block.replace("\\\n", " ")
        lines += [line.split(" #", 1)[0].strip() for line in logical.splitlines()]
    if inline:
        lines += _INLINE.findall(_without_code_blocks(text))
    return [line for line in lines if line]


def _argvs(line: str, program: str) -> Iterator[list[str]]:
    """The argument lists ``line`` runs ``program`` with; ``a|b`` spans every choice."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return
    while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
        words.pop(0)  # VAR=value before the command
    if words[:1] != [program]:
        return
    words = words[1:]
    for sep in ("&&", "||", "|", ";"):
        if sep in words:
            words = words[: words.index(sep)]
    choices = [word.split("|") if "|" in word else [word] for word in words]
    for combination in itertools.product(*choices):
        yield list(combination)


def _parse_problem(argv: list[str]) -> str | None:
    """Why the real ``supplyflow`` parser refuses ``argv``, or None when it accepts it."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            _parser().parse_args(argv)
    except SystemExit as exc:
        if exc.code not in (0, None):
            return stderr.getvalue().strip().splitlines()[-1]
    return None


def _exported_metric_names() -> set[str]:
    """Every sample name a worker can export, from its registry's families and types."""
    metrics = Metrics(CollectorRegistry(), app_id="docs", version="0")
    probes = StateProbes(
        lag=dict,
        table_keys=dict,
        disk_bytes=int,
        recovery_remaining=int,
        open_exceptions=dict,
        pending_deadlines=int,
        rocksdb_memory=dict,
    )
    metrics.registry.register(WorkerCollector(probes, rules=()))
    suffixes = {
        "counter": ("_total",),
        "histogram": ("", "_bucket", "_sum", "_count"),
        "summary": ("", "_sum", "_count"),
    }
    names: set[str] = set()
    for family in metrics.registry.collect():
        for suffix in suffixes.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


def _secret_settings() -> set[str]:
    return {
        name
        for name, field in Settings.model_fields.items()
        if "SecretStr" in str(field.annotation)
    }


def _variable_problem(name: str, code: str) -> str | None:
    field = name.removeprefix(ENV_PREFIX).lower()
    if field in Settings.model_fields:
        return None
    base = field.removesuffix("_file")
    if field.endswith("_file") and base in _secret_settings():
        return None  # the secret read from a file
    if name.startswith(CLIENT_OPTION_PREFIX) and name != CLIENT_OPTION_PREFIX:
        option = name.removeprefix(CLIENT_OPTION_PREFIX).lower()
        if option in CLIENT_OPTIONS:
            return None
        return f"{name}: {option!r} is not a Kafka client option supplyflow passes through"
    if f'"{name}"' in code or f"'{name}'" in code:
        return None  # read by a tool or a test, not a worker setting
    return f"{name} is neither a setting (Settings has no {field!r}) nor read by any code"


@pytest.fixture(scope="module")
def code_text() -> str:
    # also the package's own top-level modules and the build script (supplyflow.compiled,
    # setup.py: the mypyc build's switches)
    top = [*(ROOT / "src" / "supplyflow").glob("*.py"), ROOT / "setup.py"]
    return "\n".join(
        path.read_text(encoding="utf-8")
        for path in [*(p for folder in _CODE_DIRS for p in (ROOT / folder).rglob("*.py")), *top]
        if path.resolve() != Path(__file__).resolve()  # its own examples prove nothing
    )


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower())
    return text.replace(" ", "-")


# -- the README ------------------------------------------------------------------------------


def test_readme_is_a_front_page() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines; keep it under {MAX_README_LINES}: move detail to docs/"
    )
    text = "\n".join(lines)
    for page in DOCS:
        assert f"(docs/{page.name})" in text, f"the README does not link docs/{page.name}"
    assert (ROOT / "LICENSE").is_file()
    assert "Apache License" in (ROOT / "LICENSE").read_text(encoding="utf-8")


def test_readme_commands_parse_with_the_cli() -> None:
    text = README.read_text(encoding="utf-8")
    argvs = [a for line in _command_lines(text, inline=True) for a in _argvs(line, "supplyflow")]
    assert len(argvs) >= 3, f"found too few supplyflow commands in README.md: {argvs}"
    problems = [f"supplyflow {shlex.join(a)}: {p}" for a in argvs if (p := _parse_problem(a))]
    assert not problems, "\n".join(problems)


def test_readme_make_targets_exist() -> None:
    targets = set(_MAKE_TARGET.findall((ROOT / "Makefile").read_text(encoding="utf-8")))
    text = README.read_text(encoding="utf-8")
    named = {a[0] for line in _command_lines(text, inline=True) for a in _argvs(line, "make") if a}
    assert {"demo", "test"} <= named
    assert named <= targets, f"the README names make targets that do not exist: {named - targets}"


# -- README and docs ---------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_variables_exist(page: Path, code_text: str) -> None:
    names = set(_VARIABLE.findall(page.read_text(encoding="utf-8")))
    problems = [p for name in sorted(names) if (p := _variable_problem(name, code_text))]
    assert not problems, f"{_rel(page)}:\n" + "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_metrics_exist(page: Path) -> None:
    exported = _exported_metric_names()
    named = set(_METRIC.findall(page.read_text(encoding="utf-8")))
    unknown = sorted(named - exported)
    assert not unknown, f"{_rel(page)} names metrics no worker exports: {unknown}"


@pytest.mark.parametrize("page", DOCS, ids=_rel)
def test_shell_examples_parse_with_the_cli(page: Path) -> None:
    lines = _command_lines(page.read_text(encoding="utf-8"), inline=False)
    argvs = [a for line in lines for a in _argvs(line, "supplyflow")]
    problems = [f"supplyflow {shlex.join(a)}: {p}" for a in argvs if (p := _parse_problem(a))]
    assert not problems, f"{_rel(page)}:\n" + "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_relative_links_resolve(page: Path) -> None:
    text = _without_code_blocks(page.read_text(encoding="utf-8"))
    problems = []
    for link in _LINK.findall(text):
        if re.match(r"^[a-z]+:", link):
            continue  # http:, https:, mailto:
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        if not path.exists():
            problems.append(f"{link}: {path} does not exist")
            continue
        if anchor and path.suffix == ".md":
            slugs = {_slug(h) for h in _HEADING.findall(_without_code_blocks(path.read_text()))}
            if anchor not in slugs:
                problems.append(f"{link}: no heading #{anchor} in {_rel(path)}")
    assert not problems, f"{_rel(page)}:\n" + "\n".join(problems)


# -- the checks themselves can fail ------------------------------------------------------------


def test_checks_report_what_does_not_exist(code_text: str) -> None:
    assert _parse_problem(["worker"]) is None
    assert _parse_problem(["kafka", "up", "--port", "9093"]) is None
    assert _parse_problem(["kafka", "upp"]) is not None
    assert _parse_problem(["dlq", "list", "--no-such-option"]) is not None
    assert list(_argvs("SUPPLYFLOW_X=1 supplyflow kafka up|down  # c", "supplyflow")) == [
        ["kafka", "up"],
        ["kafka", "down"],
    ]
    assert _variable_problem("SUPPLYFLOW_BOOTSTRAP", code_text) is None
    assert _variable_problem("SUPPLYFLOW_BOOTSTRAPP", code_text) is not None
    assert _variable_problem("SUPPLYFLOW_API_TOKEN_FILE", code_text) is None
    assert _variable_problem("SUPPLYFLOW_APP_ID_FILE", code_text) is not None
    assert _variable_problem("SUPPLYFLOW_KAFKA_CLIENT_CLIENT_ID", code_text) is None
    assert _variable_problem("SUPPLYFLOW_KAFKA_CLIENT_LINGER_MS", code_text) is not None
    assert "supplyflow_events_total" in _exported_metric_names()
    assert "supplyflow_events" not in _exported_metric_names()
    assert _slug("Dead letters: `supplyflow dlq list|show|replay`") == (
        "dead-letters-supplyflow-dlq-listshowreplay"
    )
