"""The shape of the package: one definition per check, no import circles, few root modules."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

import synthguard as sg
from synthguard.checks import (
    BATCH_TESTS,
    RESAMPLED_TESTS,
    SAMPLE_CHECKS,
    BatchTestName,
    SampleCheckName,
)

PACKAGE = Path(sg.__file__).parent


def _modules() -> list[str]:
    names = ["synthguard"]
    for info in pkgutil.walk_packages([str(PACKAGE)], prefix="synthguard."):
        names.append(info.name)
    return sorted(names)


# -- the registries are the one place a check or test is defined ----------------------------


def test_check_names_reason_codes_and_registry_agree() -> None:
    assert get_args(SampleCheckName) == tuple(SAMPLE_CHECKS)
    reason_codes = {code.value for code in sg.ReasonCode}
    for name, check in SAMPLE_CHECKS.items():
        assert check.name == name and check.reason.value == name in reason_codes
    scores = [check.score for check in SAMPLE_CHECKS.values()]
    assert len(set(scores)) == len(scores)  # one score name per check
    # every code has its few words for report pages, distinct from the others'
    words = [code.words for code in sg.ReasonCode]
    assert all(w and w[0].islower() and not w.endswith(".") for w in words)
    assert len(set(words)) == len(words)


def test_test_names_and_registry_agree() -> None:
    assert get_args(BatchTestName) == tuple(BATCH_TESTS)
    assert tuple(n for n, t in BATCH_TESTS.items() if t.null == "resampled") == RESAMPLED_TESTS
    exact = [t for t in BATCH_TESTS.values() if t.null == "exact"]
    assert [t.name for t in exact] == ["duplicate_rate", "flag_rate"]
    assert all(t.exact_p is not None and t.exact_bound is not None for t in exact)
    resampled = [t for t in BATCH_TESTS.values() if t.null == "resampled"]
    assert all(t.exact_p is None and t.exact_bound is None for t in resampled)


def test_config_defaults_come_from_the_registries() -> None:
    config = sg.GuardConfig()
    assert config.sample_checks == tuple(n for n, c in SAMPLE_CHECKS.items() if c.default)
    assert config.batch_tests == tuple(n for n, t in BATCH_TESTS.items() if t.default)
    # The literal types of the config accept every registered name and nothing else.
    sg.GuardConfig(sample_checks=tuple(SAMPLE_CHECKS), batch_tests=tuple(BATCH_TESTS))
    with pytest.raises(ValueError, match="sample_checks"):
        sg.GuardConfig(sample_checks=("knn_distance",))


# -- no import circles -----------------------------------------------------------------------


def _imports(path: Path, module: str, known: set[str]) -> set[str]:
    """Every synthguard module ``module`` names in an import statement (any scope, including
    ``TYPE_CHECKING`` blocks and imports inside functions)."""
    is_package = path.name == "__init__.py"
    base = module if is_package else module.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base.split(".")
                prefix = ".".join(parts[: len(parts) - node.level + 1])
                source = f"{prefix}.{node.module}" if node.module else prefix
            else:
                source = node.module or ""
            # ``from pkg import sub`` names the submodule when there is one.
            targets = [
                f"{source}.{a.name}" if f"{source}.{a.name}" in known else source
                for a in node.names
            ]
        else:
            continue
        out.update(t for t in targets if t in known and t != module)
    return out


def _graph() -> dict[str, set[str]]:
    known = set(_modules())
    graph = {}
    for name in known:
        relative = Path(*name.split(".")[1:])
        path = PACKAGE / relative / "__init__.py"
        if not path.exists():
            path = PACKAGE / relative.with_suffix(".py")
        graph[name] = _imports(path, name, known)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_module_graph_has_no_cycles() -> None:
    """Deferred and ``TYPE_CHECKING`` imports count: a circle broken by them is still one."""
    graph = _graph()
    assert len(graph) > 60
    # The one import every package implies (a module's parent ``__init__``) is not a circle.
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


#: The layers of docs/design.md, bottom first: a module imports only its own or lower layers.
LAYERS = [
    "_errors", "_reasons", "_validation", "_io", "_threads", "stats", "functional", "batch",
    "datasets", "encoders", "relabel", "concepts", "checks", "config", "reference", "report",
    "guard", "monitor", "sources", "_testing", "integrations", "cli",
]  # fmt: skip


def test_imports_point_down_the_layers_of_the_design_document() -> None:
    graph = _graph()
    layer = {name: LAYERS.index(name.split(".")[1]) for name in graph if name != "synthguard"}
    assert set(LAYERS) == {name.split(".")[1] for name in layer}
    upward = [
        f"{source} -> {target}"
        for source, targets in graph.items()
        for target in targets
        if source != "synthguard" and target != "synthguard" and layer[target] > layer[source]
    ]
    assert not upward, upward


def test_the_cycle_finder_sees_deferred_and_type_only_imports(tmp_path: Path) -> None:
    """The graph test above can fail: a ``TYPE_CHECKING`` back-edge is a circle here."""
    source = tmp_path / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from synthguard.guard import Guard\n"
        "def f():\n    from synthguard.report._html import render_report\n"
    )
    known = {"synthguard.a", "synthguard.guard", "synthguard.report._html"}
    assert _imports(source, "synthguard.a", known) == {
        "synthguard.guard",
        "synthguard.report._html",
    }
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("order", ["alphabetical", "reverse"])
def test_every_module_imports_in_a_fresh_interpreter(order: str) -> None:
    """Whatever a module imports first must not find a half-built module, in either order."""
    modules = [m for m in _modules() if not m.endswith("__main__")]
    if order == "reverse":
        modules.reverse()
    script = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    done = subprocess.run(
        [sys.executable, "-c", script, *modules], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_root_private_modules_are_few_and_named() -> None:
    private = sorted(
        p.stem for p in PACKAGE.iterdir() if p.name.startswith("_") and p.name != "__init__.py"
    )
    assert private == ["_errors", "_io", "_reasons", "_testing", "_threads", "_validation"]


def test_code_cites_only_files_in_the_repository() -> None:
    for path in PACKAGE.rglob("*.py"):
        assert "DESIGN.md" not in path.read_text("utf-8"), path
