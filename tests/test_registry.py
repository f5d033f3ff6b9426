"""Model references and the conversion cache, when the user directory cannot hold it."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpts import registry
from gpts.checkpoint import Checkpoint
from gpts.config import Config
from gpts.errors import GptsWarning
from gpts.model import GPT
from gpts.registry import read_checkpoint
from gpts.weights.gguf import write_gguf


def test_an_unwritable_home_costs_the_cache_not_the_model(tmp_path, monkeypatch):
    config = Config.from_name("llama-nano", vocab_size=64, context_length=32)
    path = write_gguf(Checkpoint(config, GPT(config).state_dict()), tmp_path / "m.gguf", "f32")
    (tmp_path / "not-a-folder").write_text("a file where GPTS_HOME's parent should be")
    monkeypatch.setenv("GPTS_HOME", str(tmp_path / "not-a-folder" / "gpts"))
    monkeypatch.setattr(registry, "_warned_uncached", False)
    with pytest.warns(GptsWarning, match="without caching it") as said:
        first = read_checkpoint(str(path))
        second = read_checkpoint(str(path))
    assert len(said) == 1  # once a process
    assert first.config == second.config == config
    torch.testing.assert_close(first.state_dict, second.state_dict, rtol=0, atol=0)


@pytest.mark.slow
def test_the_bundled_model_runs_with_an_unwritable_home(bundled_gguf, tmp_path):
    (tmp_path / "not-a-folder").write_text("")
    script = Path(sys.executable).parent / "gpts"
    done = subprocess.run([str(script), "generate", "The sky is", "--max-new-tokens", "3", "--temperature", "0"],
                          capture_output=True, text=True, env={"GPTS_HOME": str(tmp_path / "not-a-folder" / "x"),
                                                              "PATH": "/usr/bin:/bin"}, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() and done.stderr.count("Warning:") == 1 and "without caching it" in done.stderr
