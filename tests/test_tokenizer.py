import io
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpts.errors import GptsError
from gpts.tokenizer import CHATML_TEMPLATE, ENDOFTEXT, Tokenizer


TEXTS = [
    "Hello world! 123",
    "The quick brown fox jumps over the lazy dog.",
    "12345 and 3.14159 and 1,000,000",
    "  multiple   spaces\t\ttabs  ",
    "line1\nline2\n\n\nline3\r\n",
    "def f(x):\n    return x**2  # square\n\tpass\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "中文字符，你好世界！",
    "emoji 😀👍🏽🇫🇷 family 👨‍👩‍👧",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "a<|endoftext|>b",
    "Café déjà vu, naïve façade.",
    "I'm you're THEY'LL we'd",
    "",
    " ",
    "\n",
    "  leading and trailing  ",
    "don't 'quote' \"double\"",
    "ＡＢＣ　全角",
]

# Random text for property tests: ASCII, whitespace, CJK, emoji (incl. modifiers and ZWJ), accents.
ALPHABET = st.sampled_from(list("abcXYZ019 .,'!?\n\t") + list("中文字符你好世界龘鑫日本語한국어")
                           + ["😀", "👍🏽", "👨‍👩‍👧", "🇫🇷", "é", "ñ", "\u0301", "½", "€", "<|im_end|>"])
TEXT = st.lists(ALPHABET, max_size=40).map("".join)
CHAT = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "What is 2+2?"}]
SYSTEM = [{"role": "system", "content": "You are terse."}] + CHAT


# -- fixtures -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smol_fields(bundled_gguf) -> dict:
    import gguf

    reader = gguf.GGUFReader(bundled_gguf)
    return {k: f.contents() for k, f in reader.fields.items() if k.startswith("tokenizer.")}


@pytest.fixture(scope="module")
def smol(smol_fields) -> Tokenizer:
    return Tokenizer.from_gguf_metadata(smol_fields)


@pytest.fixture(scope="module")
def smol_hf(bundled_gguf):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(bundled_gguf.parent), gguf_file=bundled_gguf.name)


@pytest.fixture(scope="module")
def sentencepiece_model():
    """A tiny SentencePiece BPE model with byte fallback, trained like Llama-2's (identity normalization)."""
    spm = pytest.importorskip("sentencepiece")
    corpus = ["The quick brown fox jumps over the lazy dog.", "Hello world, hello tokenizers!",
              "def add(a, b):\n    return a + b", "Numbers like 12345 and 3.14 appear.", "我们喜欢中文。你好世界",
              "SentencePiece splits words into pieces."] * 20
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_writer=buf, vocab_size=400, model_type="bpe",
                                   byte_fallback=True, normalization_rule_name="identity", split_digits=True,
                                   remove_extra_whitespaces=False, add_dummy_prefix=True, character_coverage=1.0,
                                   hard_vocab_limit=False, minloglevel=2)
    return spm.SentencePieceProcessor(model_proto=buf.getvalue())


@pytest.fixture(scope="module")
def sp_tok(sentencepiece_model) -> Tokenizer:
    sp = sentencepiece_model
    n = sp.get_piece_size()
    types = [2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 5 if sp.is_unused(i) else 6 if sp.is_byte(i)
             else 1 for i in range(n)]
    return Tokenizer.from_gguf_metadata({
        "tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": [sp.id_to_piece(i) for i in range(n)],
        "tokenizer.ggml.scores": [sp.get_score(i) for i in range(n)], "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.bos_token_id": sp.bos_id(), "tokenizer.ggml.eos_token_id": sp.eos_id(),
        "tokenizer.ggml.unknown_token_id": sp.unk_id()})


@pytest.fixture(scope="module")
def tiny_fields(tmp_path_factory) -> dict:
    """GGUF metadata of a tiny byte-level BPE (fast to save and load)."""
    return Tokenizer.from_dir(gpt2_style_dir(tmp_path_factory.mktemp("tiny"))).to_gguf_metadata()


def gpt2_style_dir(path: Path) -> Path:
    """A tiny byte-level BPE trained here, saved as vocab.json + merges.txt."""
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    corpus = ["The quick brown fox jumps over the lazy dog.", "Hello world 12345", "中文字符 😀 表情",
              "def f(x): return x  # done", "I'm sure they'll come."] * 10
    bpe.train_from_iterator(corpus, vocab_size=400, min_frequency=1, special_tokens=["<|endoftext|>"],
                            show_progress=False)
    path.mkdir(parents=True, exist_ok=True)
    bpe.model.save(str(path))
    return path


def ids_of(hf, text: str) -> list[int]:
    return hf(text)["input_ids"]


# -- SmolLM2 (bundled GGUF) against transformers ----------------------------------------------------------------


def test_smollm2_gguf_ids_match_transformers(smol, smol_hf):
    mismatches = [(t, smol.encode(t), ids_of(smol_hf, t)) for t in TEXTS if smol.encode(t) != ids_of(smol_hf, t)]
    assert not mismatches


def test_smollm2_known_ids(smol):
    # SmolLM2's own tokenizer: digits one by one, "<|im_end|>" is id 2 and is the eos.
    assert smol.encode("Hello world! 123") == [19556, 905, 17, 216, 33, 34, 35]
    assert smol.encode("<|im_start|>user<|im_end|>") == [1, 4093, 2]
    assert (smol.bos_token, smol.eos_token, smol.pad_token) == ("<|im_start|>", "<|im_end|>", "<|im_end|>")
    assert smol.eos_id == 2 and smol.eos_ids == {2}
    assert not smol.add_bos and smol.vocab_size == 49152


def test_smollm2_splits_every_numeral_like_llama_cpp(smol):
    # llama.cpp's "smollm" pre-tokenizer isolates every \p{N} character, not only ASCII digits
    # (transformers' GGUF loader keeps " ½" together; SmolLM2's own tokenizer.json does not).
    for text in (" ½", " ٣٤", "x²"):
        expected = [i for ch in text for i in smol.encode(ch)] if text != "x²" else smol.encode("x") + smol.encode("²")
        assert smol.encode(text) == expected


def test_smollm2_decode_round_trip(smol):
    for text in TEXTS:
        assert smol.decode(smol.encode(text)) == text
    assert smol.decode(smol.encode("<|im_start|>hi<|im_end|>"), skip_special=True) == "hi"


@pytest.mark.parametrize("messages", [CHAT, SYSTEM], ids=["no-system", "system"])
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_smollm2_chat_template_matches_transformers(smol, smol_hf, messages, add_generation_prompt):
    ours = smol.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
    theirs = smol_hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    assert ours == theirs
    assert ("You are a helpful AI assistant named SmolLM" in ours) == (messages is CHAT)
    assert smol.encode_chat(messages) == smol.encode(smol.apply_chat_template(messages))


# -- GGUF metadata round trips ---------------------------------------------------------------------------------


def test_to_gguf_metadata_reproduces_the_file(smol, smol_fields):
    meta = smol.to_gguf_metadata()
    assert {k: smol_fields[k] for k in meta} == meta
    again = Tokenizer.from_gguf_metadata(meta)
    assert again.to_gguf_metadata() == meta
    for text in TEXTS:
        assert again.encode(text) == smol.encode(text)


@pytest.mark.parametrize("pre", ["gpt-2", "smollm", "llama-bpe", "smaug-bpe", "qwen2", "qwen35", "gpt-4o",
                                 "tekken", "default"])
def test_pre_tokenizer_survives_save_and_gguf_export(tiny_fields, tmp_path, pre):
    """A tokenizer saved as tokenizer.json and loaded back is recognized as the llama.cpp pre-tokenizer it is."""
    tok = Tokenizer.from_gguf_metadata({**tiny_fields, "tokenizer.ggml.pre": pre})
    tok.save(tmp_path)
    loaded = Tokenizer.from_dir(tmp_path)
    assert loaded.pre is None
    meta = loaded.to_gguf_metadata()
    assert meta["tokenizer.ggml.pre"] == pre
    back = Tokenizer.from_gguf_metadata(meta)
    for text in TEXTS + ["Numbers: 1234567 ٣٤ ½; HTTPServer's CamelCase\r\n\r\n  x", "a+b=c <tag>~|^$ é́"]:
        assert loaded.encode(text) == tok.encode(text) == back.encode(text)


def test_pre_tokenizer_aliases_and_llama3_defaults(smol_fields):
    llama3 = Tokenizer.from_gguf_metadata({**smol_fields, "tokenizer.ggml.pre": "llama-bpe"})
    assert llama3.backend.model.ignore_merges
    assert not llama3.add_bos  # the file's add_bos_token wins over llama.cpp's default for the name
    fields = {k: v for k, v in smol_fields.items() if k != "tokenizer.ggml.add_bos_token"}
    assert Tokenizer.from_gguf_metadata({**fields, "tokenizer.ggml.pre": "llama3"}).add_bos
    starcoder = Tokenizer.from_gguf_metadata({**smol_fields, "tokenizer.ggml.pre": "starcoder"})
    assert starcoder.encode("x 12 ½") == Tokenizer.from_gguf_metadata(smol_fields).encode("x 12 ½")


def test_add_bos_from_gguf(smol_fields):
    tok = Tokenizer.from_gguf_metadata({**smol_fields, "tokenizer.ggml.add_bos_token": True})
    assert tok.encode("hi") == [1] + tok.encode("hi", add_special=False)
    assert tok.encode_batch(["hi", "yo"]) == [tok.encode("hi"), tok.encode("yo")]
    assert Tokenizer.from_gguf_metadata(tok.to_gguf_metadata()).encode("hi") == tok.encode("hi")


# -- SentencePiece ("llama") GGUF tokenizers ---------------------------------------------------------------------

SP_TEXTS = ["Hello world", " leading space", "The lazy fox 12345!", "中文 and 日本語 😀", "tabs\tand\nnewlines\n\n",
            "", "  ", "unseen zebra xylophone QQQ", "a  b   c", "trailing "]


def test_sentencepiece_gguf_matches_sentencepiece(sp_tok, sentencepiece_model):
    sp = sentencepiece_model
    for text in SP_TEXTS:
        assert sp_tok.encode(text, add_special=False) == sp.encode(text)
        assert sp_tok.decode(sp_tok.encode(text), skip_special=True) == sp.decode(sp.encode(text)) == text
    assert sp_tok.add_bos and sp_tok.encode("hi")[0] == sp.bos_id()
    assert sp_tok.decode(sp_tok.encode("hi"), skip_special=True) == "hi"


def test_sentencepiece_gguf_round_trip(sp_tok, tmp_path):
    meta = sp_tok.to_gguf_metadata()
    assert meta["tokenizer.ggml.model"] == "llama" and meta["tokenizer.ggml.add_space_prefix"] is True
    back = Tokenizer.from_gguf_metadata(meta)
    assert back.to_gguf_metadata() == meta
    sp_tok.save(tmp_path)
    loaded = Tokenizer.from_dir(tmp_path)
    assert loaded.add_bos
    exported = Tokenizer.from_gguf_metadata(loaded.to_gguf_metadata())  # scores recovered from the merges
    for text in SP_TEXTS:
        assert back.encode(text) == loaded.encode(text) == exported.encode(text) == sp_tok.encode(text)


# -- Hugging Face directories ----------------------------------------------------------------------------------


def test_gpt2_style_vocab_and_merges(tmp_path):
    from transformers import GPT2TokenizerFast

    d = gpt2_style_dir(tmp_path / "gpt2")
    tok = Tokenizer.from_dir(d)
    hf = GPT2TokenizerFast(str(d / "vocab.json"), str(d / "merges.txt"))
    for text in TEXTS:
        assert tok.encode(text) == ids_of(hf, text), text
        assert tok.decode(tok.encode(text)) == text
    assert tok.bos_token == tok.eos_token == "<|endoftext|>" and tok.encode("<|endoftext|>") == [0]
    assert tok.to_gguf_metadata()["tokenizer.ggml.pre"] == "gpt-2"
    back = Tokenizer.from_gguf_metadata(tok.to_gguf_metadata())
    assert [back.encode(t) for t in TEXTS] == [tok.encode(t) for t in TEXTS]


def test_tokenizer_config_special_tokens_and_templates(tmp_path):
    d = gpt2_style_dir(tmp_path / "m")
    config = {"bos_token": {"__type": "AddedToken", "content": "<|endoftext|>"}, "add_bos_token": True,
              "chat_template": [{"name": "tool_use", "template": "TOOLS"},
                                {"name": "default", "template": "{{ bos_token }}{{ messages[0]['content'] }}"}]}
    (d / "tokenizer_config.json").write_text(json.dumps(config))
    (d / "special_tokens_map.json").write_text(json.dumps({"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
                                                           "bos_token": "ignored: tokenizer_config.json wins"}))
    tok = Tokenizer.from_dir(d)
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|endoftext|>",) * 3
    assert tok.add_bos and tok.encode("x")[0] == 0
    assert tok.apply_chat_template([{"role": "user", "content": "hey"}]) == "<|endoftext|>hey"
    assert tok.encode_chat([{"role": "user", "content": "hey"}]).count(0) == 1  # no double BOS
    (d / "chat_template.jinja").write_text("{{ eos_token }}{{ strftime_now('%Y') | length }}")
    assert Tokenizer.from_dir(d).apply_chat_template(CHAT) == "<|endoftext|>4"


def test_save_round_trip_and_transformers_loads_it(smol, tmp_path):
    from transformers import AutoTokenizer

    smol.save(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"tokenizer.json", "tokenizer_config.json"}
    loaded = Tokenizer.from_dir(tmp_path)
    assert (loaded.bos_token, loaded.eos_token, loaded.pad_token, loaded.add_bos) == \
        (smol.bos_token, smol.eos_token, smol.pad_token, smol.add_bos)
    assert loaded.chat_template == smol.chat_template and loaded.eos_ids == smol.eos_ids
    hf = AutoTokenizer.from_pretrained(str(tmp_path))
    for text in TEXTS:
        assert loaded.encode(text) == smol.encode(text) == ids_of(hf, text), text
    assert hf.apply_chat_template(SYSTEM, tokenize=False, add_generation_prompt=True) == \
        smol.apply_chat_template(SYSTEM)


def test_save_with_add_bos_keeps_bos_for_transformers(smol_fields, tmp_path):
    from transformers import AutoTokenizer

    tok = Tokenizer.from_gguf_metadata({**smol_fields, "tokenizer.ggml.add_bos_token": True})
    tok.save(tmp_path)
    hf = AutoTokenizer.from_pretrained(str(tmp_path))
    loaded = Tokenizer.from_dir(tmp_path)
    for text in ["hello", "中文", ""]:
        assert ids_of(hf, text) == tok.encode(text) == loaded.encode(text)
        assert tok.encode(text)[0] == 1
    # without add_bos_token in tokenizer_config.json, the tokenizer.json post-processor tells (as for Llama-3)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    del config["add_bos_token"]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    assert Tokenizer.from_dir(tmp_path).add_bos
    # and the other way: a tokenizer.json that adds BOS, saved with add_bos off
    tok.add_bos = False
    tok.save(tmp_path / "off")
    assert ids_of(AutoTokenizer.from_pretrained(str(tmp_path / "off")), "hello") == tok.encode("hello")


# -- streaming detokenization ------------------------------------------------------------------------------------


def stream(tok: Tokenizer, ids: list[int], skip_special: bool = False) -> list[str]:
    dec = tok.stream_decoder(skip_special=skip_special)
    return [dec.push(i) for i in ids] + [dec.flush()]


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@PROPERTY
@given(text=TEXT)
def test_stream_of_random_text_equals_decode(smol, sp_tok, text):
    for tok in (smol, sp_tok):
        ids = tok.encode(text, add_special=False)
        pieces = stream(tok, ids)
        assert "".join(pieces) == tok.decode(ids) == text
        assert not any("\ufffd" in p for p in pieces)  # never half a character


def _id_pool(tok: Tokenizer) -> list[int]:
    """Ids that split characters into bytes, plus special tokens: the interesting ones for streaming."""
    pool = [i for ch in "中文龘鑫😀🦜👍🏽é€½" for i in tok.encode(ch, add_special=False)]
    return pool + [i for i in (tok.bos_id, tok.eos_id, tok.token_id("<|im_start|>")) if i is not None]


@PROPERTY
@given(data=st.data(), skip_special=st.booleans())
def test_stream_of_random_ids_equals_decode(smol, sp_tok, data, skip_special):
    for tok in (smol, sp_tok):
        any_id = st.one_of(st.sampled_from(_id_pool(tok)), st.integers(0, tok.vocab_size - 1))
        ids = data.draw(st.lists(any_id, max_size=30))
        assert "".join(stream(tok, ids, skip_special)) == tok.decode(ids, skip_special=skip_special)


def test_stream_holds_back_split_characters(smol):
    ids = smol.encode("龘")
    assert len(ids) == 3  # one rare Chinese character, three byte tokens
    dec = smol.stream_decoder()
    assert [dec.push(i) for i in ids] == ["", "", "龘"]
    assert dec.flush() == ""
    dec.push(ids[0])
    assert dec.flush() == smol.decode(ids[:1]) == "\ufffd"  # an unfinished character at the end, as decode gives it


def test_stream_decodes_short_windows(smol):
    """Each push decodes a few recent tokens, not the whole text so far."""

    class Counting:
        def __init__(self, backend):
            self.backend, self.longest = backend, 0

        def decode(self, ids, **kwargs):
            self.longest = max(self.longest, len(ids))
            return self.backend.decode(ids, **kwargs)

        def __getattr__(self, name):
            return getattr(self.backend, name)

    text = "你好，世界！Streaming text 😀 with emoji and 中文 mixed in. " * 50
    ids = smol.encode(text)
    counting = Tokenizer(Counting(smol.backend))
    assert "".join(stream(counting, ids)) == text
    assert len(ids) > 500 and counting.backend.longest <= 8


def test_chinese_round_trip(smol, sp_tok):
    text = "我们喜欢中文。机器学习和自然语言处理很有趣！龘鑫"
    for tok in (smol, sp_tok):
        assert tok.decode(tok.encode(text), skip_special=True) == text
        assert "".join(stream(tok, tok.encode(text, add_special=False))) == text


# -- chat templates and eos ------------------------------------------------------------------------------------


def test_chatml_fallback_and_eos_ids(smol_fields):
    tok = Tokenizer.from_gguf_metadata({k: v for k, v in smol_fields.items() if k != "tokenizer.chat_template"})
    assert tok.chat_template is None
    assert tok.apply_chat_template(CHAT[:1]) == "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
    assert tok.apply_chat_template(CHAT[:1], add_generation_prompt=False).endswith("<|im_end|>\n")
    assert CHATML_TEMPLATE in (tok.chat_template or CHATML_TEMPLATE)
    base = Tokenizer.from_gguf_metadata({**smol_fields, "tokenizer.ggml.eos_token_id": 0})
    assert base.eos_ids == {0, 2}  # <|endoftext|>, and the template's end of turn <|im_end|>
    llama3 = Tokenizer.from_gguf_metadata({**smol_fields, "tokenizer.ggml.eos_token_id": 0,
                                           "tokenizer.chat_template": "{{ '<|eot_id|>' }}"})
    assert llama3.eos_ids == {0}  # <|eot_id|> is not in this vocabulary


def test_template_sees_special_tokens_and_helpers(smol_fields):
    template = ("{{ bos_token }}|{{ eos_token }}|{{ messages | length }}|{{ strftime_now('%Y-%m-%d') | length }}|"
                "{{ {'k': 'ü'} | tojson }}|{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}"
                "{{ m.role }}{% endfor %}")
    tok = Tokenizer.from_gguf_metadata({**smol_fields, "tokenizer.chat_template": template})
    assert tok.apply_chat_template(CHAT) == '<|im_start|>|<|im_end|>|3|10|{"k": "ü"}|user'


def test_broken_templates_are_clear_errors(smol_fields):
    broken = Tokenizer.from_gguf_metadata({**smol_fields, "tokenizer.chat_template": "{% for m in messages %}{{ m"})
    with pytest.raises(GptsError, match="malformed"):
        broken.apply_chat_template(CHAT)
    strict = Tokenizer.from_gguf_metadata({**smol_fields, "tokenizer.chat_template":
                                           "{% if messages[0]['role'] != 'system' %}"
                                           "{{ raise_exception('A system message must come first') }}{% endif %}"})
    with pytest.raises(GptsError, match="A system message must come first"):
        strict.apply_chat_template(CHAT)
    assert strict.apply_chat_template(SYSTEM) == ""
    sandboxed = Tokenizer.from_gguf_metadata({**smol_fields, "tokenizer.chat_template":
                                              "{{ messages.__class__.__mro__ }}"})
    with pytest.raises(GptsError):
        sandboxed.apply_chat_template(CHAT)


# -- errors ------------------------------------------------------------------------------------------------------


def test_from_dir_errors(tmp_path):
    with pytest.raises(GptsError, match="does not exist"):
        Tokenizer.from_dir(tmp_path / "nope")
    (tmp_path / "file").write_text("")
    with pytest.raises(GptsError, match="not a directory"):
        Tokenizer.from_dir(tmp_path / "file")
    (tmp_path / "file").unlink()
    with pytest.raises(GptsError, match=r"tokenizer\.json, or vocab\.json \+ merges\.txt") as e:
        Tokenizer.from_dir(tmp_path)
    assert str(tmp_path) in str(e.value)
    (tmp_path / "vocab.json").write_text("{}")
    with pytest.raises(GptsError, match="vocab.json"):
        Tokenizer.from_dir(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(GptsError, match="tokenizer.json"):
        Tokenizer.from_dir(tmp_path)
    d = gpt2_style_dir(tmp_path / "ok")
    (d / "tokenizer_config.json").write_text("[1, 2")
    with pytest.raises(GptsError, match="tokenizer_config.json"):
        Tokenizer.from_dir(d)


def test_from_gguf_metadata_errors(smol_fields):
    with pytest.raises(GptsError, match="'gpt2' and 'llama'"):
        Tokenizer.from_gguf_metadata({**smol_fields, "tokenizer.ggml.model": "bert"})
    with pytest.raises(GptsError, match="pre-tokenizer 'martian'"):
        Tokenizer.from_gguf_metadata({**smol_fields, "tokenizer.ggml.pre": "martian"})
    with pytest.raises(GptsError, match="tokens"):
        Tokenizer.from_gguf_metadata({"tokenizer.ggml.model": "gpt2"})
    with pytest.raises(GptsError, match="token_type"):
        Tokenizer.from_gguf_metadata({**smol_fields, "tokenizer.ggml.token_type": [1, 1]})
    with pytest.raises(GptsError, match="eos_token_id"):
        Tokenizer.from_gguf_metadata({**smol_fields, "tokenizer.ggml.eos_token_id": 10**6})
    with pytest.raises(GptsError, match="scores"):
        Tokenizer.from_gguf_metadata({"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["a", "b"]})


def test_gguf_export_refuses_what_llama_cpp_cannot_express(tmp_path):
    from tokenizers import Tokenizer as Backend
    from tokenizers import models, normalizers, pre_tokenizers

    wordlevel = Backend(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    with pytest.raises(GptsError, match="no GGUF equivalent"):
        Tokenizer(wordlevel).to_gguf_metadata()
    d = gpt2_style_dir(tmp_path / "m")
    prefixed = Tokenizer.from_dir(d)
    prefixed.backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    with pytest.raises(GptsError, match="pre-tokenizer"):
        prefixed.to_gguf_metadata()
    lowercased = Tokenizer.from_dir(d)
    lowercased.backend.normalizer = normalizers.Lowercase()
    with pytest.raises(GptsError, match="normalizes"):
        lowercased.to_gguf_metadata()
    nfc = Tokenizer.from_dir(d)
    nfc.backend.normalizer = normalizers.NFC()  # as Qwen2's; llama.cpp ignores it
    assert nfc.to_gguf_metadata()["tokenizer.ggml.pre"] == "gpt-2"


# -- new vocabularies (pretraining) ----------------------------------------------------------------------------


def test_train_bpe_streams_texts_and_saves_like_gpt2(tmp_path):
    from transformers import AutoTokenizer

    corpus = [t for t in TEXTS if t] * 5
    tok = Tokenizer.train_bpe(iter(corpus), vocab_size=320)  # an iterator: consumed once
    again = Tokenizer.train_bpe(iter(corpus), vocab_size=320)
    assert tok.backend.to_str() == again.backend.to_str()  # deterministic
    assert 257 < tok.vocab_size <= 320 and tok.token_id(ENDOFTEXT) == tok.eos_id == tok.bos_id == 0
    assert not tok.add_bos and tok.encode("a<|endoftext|>b")[1] == 0
    for text in TEXTS:
        assert tok.decode(tok.encode(text)) == text
    assert len(tok.encode("龘")) == 3  # unseen: its three UTF-8 bytes
    tok.save(tmp_path)
    loaded, hf = Tokenizer.from_dir(tmp_path), AutoTokenizer.from_pretrained(str(tmp_path))
    assert loaded.eos_token == ENDOFTEXT
    for text in TEXTS:
        assert loaded.encode(text) == tok.encode(text) == ids_of(hf, text), text


def test_train_bpe_vocabulary_bounds():
    for size in (0, 256, 2**21):
        with pytest.raises(GptsError, match="out of range"):
            Tokenizer.train_bpe(["abc"], size)
    assert Tokenizer.train_bpe(["abc"], 257).vocab_size == 257  # the bytes and <|endoftext|>


def test_char_level_is_nanogpt_vocabulary(tmp_path):
    text = "First Citizen:\nBefore we proceed, hear me speak. 中文 😀"
    tok = Tokenizer.char_level(text)
    chars = sorted(set(text))
    assert tok.vocab_size == len(chars) and tok.encode(text) == [chars.index(c) for c in text]
    assert tok.decode(tok.encode(text)) == text  # no spaces between characters
    assert tok.encode("Fx!") == [chars.index("F")]  # characters outside the vocabulary are dropped
    assert (tok.bos_id, tok.eos_id) == (None, None) and tok.eos_ids == frozenset()
    tok.save(tmp_path)
    loaded = Tokenizer.from_dir(tmp_path)
    assert loaded.encode(text) == tok.encode(text) and loaded.decode(loaded.encode(text)) == text
    assert "".join(stream(loaded, loaded.encode(text))) == text


def test_vocab_json_without_merges_is_no_tokenizer(tmp_path):
    """One rule, has_tokenizer_files, for every directory gpts reads: a half GPT-2 pair is no tokenizer."""
    from gpts.checkpoint import Checkpoint, load_native, save_native
    from gpts.config import Config
    from gpts.model import GPT
    from gpts.tokenizer import has_tokenizer_files

    config = Config.from_name("llama-nano", vocab_size=64, context_length=32)
    save_native(Checkpoint(config, GPT(config).state_dict()), tmp_path / "m")
    (tmp_path / "m" / "vocab.json").write_text('{"a": 0}')
    assert not has_tokenizer_files(tmp_path / "m") and load_native(tmp_path / "m").tokenizer is None
    assert has_tokenizer_files(gpt2_style_dir(tmp_path / "gpt2"))


@given(text=st.text(min_size=1, max_size=40))
@PROPERTY
def test_token_bytes_join_to_the_texts_bytes(smol, sp_tok, text):
    """What OpenAI's logprobs `bytes` carry: each token's own bytes, parts of a character included. (SentencePiece
    spells the space it adds before the text; its decoder drops that space again.)"""
    for tok, added in ((smol, ""), (sp_tok, " ")):
        ids = tok.encode(text, add_special=False)
        joined = b"".join(tok.token_bytes(i) for i in ids).decode("utf-8", errors="replace")
        assert joined == tok.decode(ids) or joined == added + tok.decode(ids)
