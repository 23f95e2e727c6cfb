"""Each part's import rule (docs/architecture.md), checked on the source: every import,
also the ones inside functions, of every module of the part."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "yoc_assistant"

# part -> imported top-level names or yoc_assistant parts it must never import
FORBIDDEN: dict[str, set[str]] = {
    "library": {"torch", "yoc_assistant.backbone", "yoc_assistant.personalize",
                "yoc_assistant.assistant", "yoc_assistant.app", "yoc_assistant.cli",
                "yoc_assistant.tui", "yoc_assistant.toyworld"},
    "backbone": {"yoc_assistant.library", "yoc_assistant.toyworld", "yoc_assistant.personalize",
                 "yoc_assistant.assistant", "yoc_assistant.app", "yoc_assistant.cli",
                 "yoc_assistant.tui"},
    # backbone.network is the backbone's inside: personalize uses Backbone's methods
    "personalize": {"yoc_assistant.assistant", "yoc_assistant.app", "yoc_assistant.cli",
                    "yoc_assistant.tui", "rich", "signal", "click", "textual",
                    "yoc_assistant.backbone.network"},
    "assistant": {"yoc_assistant.app", "yoc_assistant.cli", "yoc_assistant.tui", "rich",
                  "click", "textual"},
    "app": {"yoc_assistant.cli", "yoc_assistant.tui", "rich", "signal", "click", "textual"},
}


def imported_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _breaks(name: str, rule: str) -> bool:
    return name == rule or name.startswith(rule + ".")


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_part_imports_only_what_its_rule_allows(part: str) -> None:
    broken = []
    for path in sorted((PACKAGE / part).rglob("*.py")):
        for name in sorted(imported_names(path)):
            for rule in FORBIDDEN[part]:
                if _breaks(name, rule):
                    broken.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert not broken, "\n".join(broken)


def test_the_rule_catches_a_lazy_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    import torch.nn\n    from yoc_assistant.cli import x\n")
    found = imported_names(module)
    assert any(_breaks(n, "torch") for n in found)
    assert any(_breaks(n, "yoc_assistant.cli") for n in found)


def _reads_yoc_variable(node: ast.AST) -> bool:
    """os.environ["YOC_..."], os.environ.get("YOC_..."), os.getenv("YOC_...")."""
    def is_yoc(arg: ast.AST) -> bool:
        return isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.startswith("YOC_")

    if isinstance(node, ast.Subscript) and ast.unparse(node.value).endswith("environ"):
        return is_yoc(node.slice)
    if isinstance(node, ast.Call) and node.args:
        func = ast.unparse(node.func)
        if func.endswith(("environ.get", "getenv", "environ.setdefault", "environ.pop")):
            return is_yoc(node.args[0])
    return False


def test_only_settings_reads_the_yoc_environment() -> None:
    readers = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "settings.py":
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        readers += [f"{path.relative_to(PACKAGE)}:{node.lineno}" for node in ast.walk(tree)
                    if _reads_yoc_variable(node)]
    assert not readers, "YOC_* read outside yoc_assistant/settings.py: " + ", ".join(readers)


@pytest.mark.parametrize("part", ["library", "backbone", "personalize", "assistant", "app"])
def test_parts_below_the_front_ends_never_print(part: str) -> None:
    """Output is the front ends' (cli/, tui/): the parts report by return values and callbacks."""
    found = []
    for path in sorted((PACKAGE / part).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("print", "sys.stdout.write",
                                                                         "sys.stderr.write"):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not found, "prints outside cli/ and tui/: " + ", ".join(found)
