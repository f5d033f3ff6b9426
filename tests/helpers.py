"""Helpers the test modules share (fixtures live in conftest.py)."""

import importlib.util
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


class Recorder:
    """A `report` callback that keeps every event, for tests to read."""

    def __init__(self):
        self.events = []

    def __call__(self, event):
        self.events.append(event)

    def messages(self, level: str | None = None) -> list[str]:
        from gpts.events import Message

        return [e.text for e in self.events if isinstance(e, Message) and level in (None, e.level)]

    @property
    def warnings(self) -> list[str]:
        return self.messages("warning")


def killed_writer(target: Path) -> None:
    """A process that dies (kill -9) in the middle of writing `target`, as a killed `gpts convert` does."""
    code = textwrap.dedent(f"""
        import time
        from gpts.fileio import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            tmp.write_bytes(b"half a model")
            print("writing", flush=True)
            time.sleep(60)
    """)
    writer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline() == "writing\n"
    writer.send_signal(signal.SIGKILL)
    writer.wait()


TINY_CORPUS = ["the quick brown fox jumps over the lazy dog", "hello world, hello gpts", "a tiny model for tests"] * 20


def tiny_model(out: Path, context_length: int = 128) -> Path:
    """A random llama-nano with a 300-token byte-level BPE, saved as a native checkpoint at `out`."""
    import tokenizers
    import torch

    from gpts.checkpoint import Checkpoint, save_native
    from gpts.config import Config
    from gpts.model import GPT
    from gpts.tokenizer import Tokenizer

    backend = tokenizers.Tokenizer(tokenizers.models.BPE())
    backend.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(TINY_CORPUS, trainer)
    tok = Tokenizer(backend, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    torch.manual_seed(0)
    config = Config.from_name("llama-nano", vocab_size=tok.vocab_size, context_length=context_length)
    save_native(Checkpoint(config, GPT(config).state_dict(), tok, {}), out)
    return out


@contextmanager
def running(app) -> Iterator[str]:
    """Serve `app` with uvicorn (lifespan included) until the block ends: its base URL, http://127.0.0.1:PORT."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the test server did not start (its error is in the log above)")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join()
