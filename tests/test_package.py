"""The package's shape: light modules import without torch, imports point one way, library code never prints,
and every command that generates takes the same sampling flags."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "gpts"
# What the store, the server's routing and the CLI's startup stand on: none of it may load torch.
LIGHT = ["gpts", "gpts.errors", "gpts.paths", "gpts.config", "gpts.fileio", "gpts.events", "gpts.interrupt",
         "gpts.rundir", "gpts.task", "gpts.terminal", "gpts.cli", "gpts.spec", "gpts.knowledge", "gpts.modelfile",
         "gpts.store", "gpts.store.archive"]
# The only modules that draw on a terminal.
PRESENTATION = ("gpts.cli", "gpts.terminal")


def modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(path.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__")
        found[name] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The gpts modules a file imports, wherever it does (module level, functions, TYPE_CHECKING)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module in known:
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                      for a in node.names}
    return found


def test_light_modules_import_without_torch():
    code = f"import sys; import {', '.join(LIGHT)}; print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_imports_point_one_way():
    known = modules()
    graph = {name: imports(path, known) - {name} for name, path in known.items()}
    graph["gpts"] = set()  # the package's names load lazily, on first use (PEP 562)

    def cycle_from(start: str, at: str, seen: list[str]) -> list[str] | None:
        for nxt in sorted(graph[at]):
            if nxt == start:
                return seen + [nxt]
            if nxt not in seen:
                found = cycle_from(start, nxt, seen + [nxt])
                if found:
                    return found
        return None

    cycles = [c for name in graph if (c := cycle_from(name, name, [name]))]
    assert not cycles, cycles[0]


def test_library_code_never_prints():
    for name, path in modules().items():
        if name.startswith(PRESENTATION):
            continue
        tree = ast.parse(path.read_text())
        prints = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "print"]
        rich = [n.lineno for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                and any((getattr(n, "module", None) or a.name).startswith(("rich", "tqdm")) for a in n.names)]
        assert not prints and not rich, f"{path.name}: print at lines {prints}, rich/tqdm at lines {rich}"


@pytest.mark.parametrize("command", ["generate", "chat"])
def test_commands_that_generate_share_the_sampling_flags(command):
    import inspect

    from gpts.cli import chat
    from gpts.cli.common import SAMPLING_FLAGS

    parameters = inspect.signature(getattr(chat, command)).parameters
    assert [p for p in parameters.values() if p.name in {f.name for f in SAMPLING_FLAGS}] == SAMPLING_FLAGS
