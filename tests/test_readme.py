"""The README's commands, as a person copies them: each runs from the repository's root with the project's own
interpreter and tools, and every input it names is in the repository."""

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What a README command may start with: the two set-up lines, then only what .venv/ holds.
STARTS = ("bash scripts/setup.sh", ".venv/bin/")
# Inputs the README's commands read that an earlier README command writes.
MADE_BY_THE_README = ("data/", "runs/", "models/", "hf:")


def commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    return [line.split("  #")[0].strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_every_command_uses_the_projects_environment():
    bare = [c for c in commands() if not c.startswith(STARTS)]
    assert not bare, f"bare commands (use .venv/bin/...): {bare}"


def test_every_input_a_command_names_is_in_the_repository():
    missing = []
    for command in commands():
        for word in shlex.split(command)[1:]:
            if word.startswith(("examples/", "bench/", "scripts/")) and not (ROOT / word).exists():
                missing.append(word)
    assert not missing


def test_outputs_are_not_nested_inside_each_other():
    """`gpts prepare --force` once wiped the datasets prepared inside the one it replaced; it no longer does, and
    the README no longer leads there."""
    outs = [w for c in commands() for w in re.findall(r"--out (\S+)", c)]
    outs += ["data" for c in commands() if " prepare" in c and "--out" not in c]  # prepare's default --out
    nested = [(a, b) for a in outs for b in outs if a != b and b.startswith(a.rstrip("/") + "/")]
    assert not nested
