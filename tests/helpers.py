"""Helpers the test modules share (fixtures live in conftest.py)."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from gpts.cli import main


def run(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run `gpts ARGS...` in this process: (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["gpts", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    code = exit_info.value.code
    return (0 if code is None else code), captured.out, captured.err


def bench_module(name: str) -> ModuleType:
    """bench/NAME.py, imported (the benches and the tests share the task builders and reference loops there)."""
    bench = Path(__file__).resolve().parents[1] / "bench"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", bench / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
