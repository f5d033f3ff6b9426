"""The `gpts` command, through its real entry point (gpts.cli.main), on a tiny model made here."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import killed_writer, run, tiny_model


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("models") / "tiny")


def test_generate_prints_only_the_continuation(tiny_model_dir, monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "generate", "hello", "--model", str(tiny_model_dir),
                       "--max-new-tokens", "5", "--temperature", "0", "--ignore-eos")
    assert code == 0
    assert out.strip() and "hello" not in out.split()[:1]
    code, out, _ = run(monkeypatch, capsys, "generate", "hello", "--model", str(tiny_model_dir),
                       "--max-new-tokens", "5", "--ignore-eos", "-n", "2", "--seed", "1")
    assert code == 0 and "1/2" in out.splitlines()[0] and sum("2/2" in line for line in out.splitlines()) == 1


def test_generate_json_shape_and_seed(tiny_model_dir, monkeypatch, capsys):
    args = ["generate", "the quick", "--model", str(tiny_model_dir), "--max-new-tokens", "6", "--seed", "3",
            "--ignore-eos", "-n", "2", "--json"]
    code, out, _ = run(monkeypatch, capsys, *args)
    assert code == 0
    result = json.loads(out)
    assert set(result) == {"model", "completions", "usage", "timings"}
    assert len(result["completions"]) == 2
    assert all(len(c["token_ids"]) == 6 and c["finish_reason"] == "length" for c in result["completions"])
    assert result["usage"] == {"prompt_tokens": result["timings"]["prompt_n"], "completion_tokens": 12}
    assert set(result["timings"]) == {"prompt_n", "prompt_ms", "prompt_per_second", "predicted_n", "predicted_ms",
                                      "predicted_per_second", "cache_n"}
    again = json.loads(run(monkeypatch, capsys, *args)[1])
    assert [c["token_ids"] for c in again["completions"]] == [c["token_ids"] for c in result["completions"]]


def test_stream_equals_plain_output(tiny_model_dir, monkeypatch, capsys):
    args = ["generate", "hello world", "--model", str(tiny_model_dir), "--max-new-tokens", "8", "--temperature", "0",
            "--ignore-eos"]
    plain = run(monkeypatch, capsys, *args)[1]
    streamed = run(monkeypatch, capsys, *args, "--stream")[1]
    assert plain == streamed


def test_chat_message_answers_once(tiny_model_dir, monkeypatch, capsys):
    code, out, err = run(monkeypatch, capsys, "chat", "--model", str(tiny_model_dir), "--message", "hello",
                         "--system", "be brief", "--max-new-tokens", "4", "--temperature", "0")
    assert code == 0, err
    assert out.endswith("\n")


def test_models_show_and_convert(tiny_model_dir, tmp_path, monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "models", "show", str(tiny_model_dir), "--json")
    assert code == 0
    info = json.loads(out)
    assert info["architecture"] == "llama" and info["context_length"] == 128
    for fmt, target in (("hf", tmp_path / "hf"), ("gguf", tmp_path / "m.gguf"), ("gpts", tmp_path / "native")):
        code, _, err = run(monkeypatch, capsys, "convert", str(tiny_model_dir), "--to", fmt, "--out", str(target),
                           "--gguf-type", "f32")
        assert code == 0, err
        assert target.exists()
        # Every converted model is itself a model reference that generates the same greedy text.
        gen = ["generate", "hello", "--max-new-tokens", "5", "--temperature", "0", "--ignore-eos", "--json"]
        original = json.loads(run(monkeypatch, capsys, *gen, "--model", str(tiny_model_dir))[1])
        converted = json.loads(run(monkeypatch, capsys, *gen, "--model", str(target))[1])
        assert converted["completions"][0]["token_ids"] == original["completions"][0]["token_ids"]


def test_models_list_shows_the_bundled_model(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "models", "list", "--json")
    assert code == 0
    assert any(row["name"].startswith("smollm2-135m-instruct") for row in json.loads(out))


# -- bad input: a clear paragraph on stderr, a non-zero exit, no traceback ---------------------------------


def truncated_gguf(tmp_path: Path) -> Path:
    from gpts.refs import bundled_path

    path = tmp_path / "truncated.gguf"
    with open(bundled_path("smollm2-135m-instruct"), "rb") as f:
        path.write_bytes(f.read(3_000_000))
    return path


def model_copy(tmp_path: Path, tiny_model_dir: Path, file: str, text: str) -> Path:
    """A copy of the tiny model with one of its files replaced by `text`."""
    path = tmp_path / f"copy-{file}"
    shutil.copytree(tiny_model_dir, path)
    (path / file).write_text(text)
    return path


def config_with(tiny_model_dir: Path, **changes) -> str:
    return json.dumps({**json.loads((tiny_model_dir / "config.json").read_text()), **changes})


def corrupt_gguf(tmp_path: Path) -> Path:
    path = tmp_path / "corrupt.gguf"
    path.write_bytes(b"GGUF" + bytes(range(256)) * 40)  # the magic, then nonsense
    return path


def file_as_parent(tmp_path: Path) -> Path:
    (tmp_path / "a-file").write_text("")
    return tmp_path / "a-file" / "out"


def precious_dir(tmp_path: Path) -> Path:
    path = tmp_path / "precious"
    path.mkdir()
    (path / "notes.txt").write_text("not a model")
    return path


BAD_INPUTS = [
    ("missing path", lambda tmp, tiny: ["generate", "hi", "--model", str(tmp / "nope")], "No model named"),
    ("not a gguf", lambda tmp, tiny: ["generate", "hi", "--model", str(tmp / "x.gguf")], "No model named"),
    ("truncated gguf", lambda tmp, tiny: ["generate", "hi", "--model", str(truncated_gguf(tmp))], "truncated.gguf"),
    ("unknown architecture", lambda tmp, tiny: ["generate", "hi", "--model", str(
        model_copy(tmp, tiny, "config.json", config_with(tiny, arch="mamba")))], "Unknown architecture"),
    ("corrupt gguf", lambda tmp, tiny: ["generate", "hi", "--model", str(corrupt_gguf(tmp))], "corrupt.gguf"),
    ("config does not fit the weights", lambda tmp, tiny: ["generate", "hi", "--model", str(
        model_copy(tmp, tiny, "config.json", config_with(tiny, intermediate_size=1000)))], "do not fit the config"),
    ("malformed generation_config.json", lambda tmp, tiny: ["generate", "hi", "--model", str(
        model_copy(tmp, tiny, "generation_config.json", "{bad"))], "generation_config.json"),
    ("unknown preset", lambda tmp, tiny: ["pretrain", "--model", "gpt9-nano", "--data", str(tiny / "config.json"),
                                          "--out", str(tmp / "run")], "Unknown model preset"),
    ("malformed config.json", lambda tmp, tiny: ["generate", "hi", "--model", str(
        model_copy(tmp, tiny, "config.json", '{"arch": "llama",'))], "Cannot read"),
    ("empty prompt", lambda tmp, tiny: ["generate", "", "--model", str(tiny)], "The prompt is blank"),
    ("blank prompt", lambda tmp, tiny: ["generate", " \n ", "--model", str(tiny)], "The prompt is blank"),
    ("prompt longer than context", lambda tmp, tiny: ["generate", "hello world " * 100, "--model", str(tiny)],
     "context"),
    ("negative temperature", lambda tmp, tiny: ["generate", "hi", "--model", str(tiny), "--temperature", "-1"],
     "temperature"),
    ("top_p zero", lambda tmp, tiny: ["generate", "hi", "--model", str(tiny), "--top-p", "0"], "top_p"),
    ("top_p above one", lambda tmp, tiny: ["generate", "hi", "--model", str(tiny), "--top-p", "1.5"], "top_p"),
    ("tiny temperature", lambda tmp, tiny: ["generate", "hi", "--model", str(tiny), "--temperature", "1e-40"],
     "--temperature"),
    ("seed out of range", lambda tmp, tiny: ["generate", "hi", "--model", str(tiny), "--seed", str(2**64)], "--seed"),
    ("unknown dtype", lambda tmp, tiny: ["generate", "hi", "--model", str(tiny), "--dtype", "int3"], "dtype"),
    ("unknown format", lambda tmp, tiny: ["convert", str(tiny), "--to", "onnx", "--out", str(tmp / "o")], "onnx"),
    ("convert over a non-model directory", lambda tmp, tiny: ["convert", str(tiny), "--to", "gpts", "--out",
                                                               str(precious_dir(tmp)), "--force"], "will not replace"),
    ("convert under a file", lambda tmp, tiny: ["convert", str(tiny), "--to", "gguf", "--out",
                                                 str(file_as_parent(tmp))], "is a file, not a directory"),
    ("convert over an existing model", lambda tmp, tiny: ["convert", str(tiny), "--to", "gpts", "--out", str(tiny)],
     "--force"),
    ("offline hub", lambda tmp, tiny: ["generate", "hi", "--model", "hf:someone/missing-model"], "offline"),
    ("malformed hub ref", lambda tmp, tiny: ["generate", "hi", "--model", "hf:"], "hf:"),
    ("blank chat message", lambda tmp, tiny: ["chat", "--model", str(tiny), "--message", " "], "is blank"),
]


@pytest.mark.parametrize("name,args,expected", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_a_clear_error(name, args, expected, tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out, err = run(monkeypatch, capsys, *args(tmp_path, tiny_model_dir))
    assert code == 1
    assert expected in err
    assert "Traceback" not in err + out
    assert err.startswith("Error:")
    assert (tmp_path / "precious" / "notes.txt").exists() == (name == "convert over a non-model directory")
    assert (tiny_model_dir / "model.safetensors").is_file()


def test_stop_flag_escapes(tiny_model_dir, monkeypatch, capsys):
    from gpts.cli.common import unescape

    assert unescape(r"\n\n") == "\n\n" and unescape(r"a\tb") == "a\tb" and unescape(r"\\n") == "\\n"
    args = ["generate", "hello world", "--model", str(tiny_model_dir), "--max-new-tokens", "12", "--temperature", "0",
            "--ignore-eos", "--json"]
    text = json.loads(run(monkeypatch, capsys, *args)[1])["completions"][0]["text"]
    stop = text[3:5]  # two characters the greedy text is sure to contain
    escaped = stop.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")
    stopped = json.loads(run(monkeypatch, capsys, *args, "--stop", escaped)[1])["completions"][0]
    assert stopped["finish_reason"] == "stop" and stopped["text"] == text[:text.index(stop)]


def test_a_gguf_file_by_any_name(tiny_model_dir, tmp_path, monkeypatch, capsys):
    target = tmp_path / "model.bin"
    assert run(monkeypatch, capsys, "convert", str(tiny_model_dir), "--to", "gguf", "--out", str(target))[0] == 0
    code, out, err = run(monkeypatch, capsys, "models", "show", str(target), "--json")
    assert code == 0, err
    assert json.loads(out)["source"].startswith("GGUF file")


def test_an_os_error_while_writing_is_an_error_paragraph(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import errno

    import safetensors.torch

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out"))

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    code, out, err = run(monkeypatch, capsys, "convert", str(tiny_model_dir), "--to", "hf", "--out", str(tmp_path / "out"))
    assert code == 1 and "Traceback" not in err
    assert err.startswith("Error: No space left on device") and "free disk space" in err
    assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_convert_force_replaces_a_model(tiny_model_dir, tmp_path, monkeypatch, capsys):
    target = tmp_path / "copy"
    assert run(monkeypatch, capsys, "convert", str(tiny_model_dir), "--to", "gpts", "--out", str(target))[0] == 0
    code, _, err = run(monkeypatch, capsys, "convert", str(tiny_model_dir), "--to", "hf", "--out", str(target), "--force")
    assert code == 0, err
    assert "model_type" in json.loads((target / "config.json").read_text())


def test_truncation_when_asked(tiny_model_dir, monkeypatch, capsys):
    code, out, err = run(monkeypatch, capsys, "generate", "hello world " * 100, "--model", str(tiny_model_dir),
                         "--truncate", "--max-new-tokens", "4", "--ignore-eos", "--json")
    assert code == 0, err
    assert json.loads(out)["usage"]["prompt_tokens"] == 124


def test_console_script_exit_code_and_no_traceback(tmp_path):
    gpts = Path(sys.executable).parent / "gpts"
    proc = subprocess.run([str(gpts), "generate", "hi", "--model", str(tmp_path / "missing")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "No model named" in proc.stderr and "Traceback" not in proc.stderr


def test_bfloat16_compute(tiny_model_dir, monkeypatch, capsys):
    args = ["generate", "hello world", "--model", str(tiny_model_dir), "--max-new-tokens", "8", "--temperature", "0",
            "--ignore-eos", "--json"]
    code, out, err = run(monkeypatch, capsys, *args, "--dtype", "bfloat16")
    assert code == 0, err
    bf16 = json.loads(out)["completions"][0]["token_ids"]
    f32 = json.loads(run(monkeypatch, capsys, *args)[1])["completions"][0]["token_ids"]
    assert len(bf16) == 8 and bf16[0] == f32[0]  # rounding may change later picks of a random model, not the first


def test_a_killed_convert_leaves_nothing_that_stays(tiny_model_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "tiny.gguf"
    killed_writer(out)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tiny.gguf.")]
    code, _, err = run(monkeypatch, capsys, "convert", str(tiny_model_dir), "--to", "gguf", "--out", str(out))
    assert code == 0, err
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.gguf"]
