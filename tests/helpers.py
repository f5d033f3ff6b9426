"""Helpers the test modules share (fixtures live in conftest.py)."""

import sys

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
