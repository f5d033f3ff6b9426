"""Text <-> token ids, backed by the `tokenizers` library; plus special tokens, streaming
detokenization and chat templates.

Three ways in, two ways out:

- `Tokenizer.from_dir(path)`: a Hugging Face directory, `tokenizer.json` or GPT-2 style `vocab.json` +
  `merges.txt`, with `tokenizer_config.json` / `special_tokens_map.json` / `chat_template.jinja`.
- `Tokenizer.from_gguf_metadata(fields)`: the `tokenizer.*` metadata of a GGUF file, built the way
  llama.cpp tokenizes: byte-level BPE ("gpt2", with the pre-tokenizer named by `tokenizer.ggml.pre`) or
  SentencePiece-style BPE with byte fallback ("llama").
- New vocabularies for pretraining: `Tokenizer.train_bpe(texts, vocab_size)` (GPT-2 style byte-level BPE learned
  from a stream of texts) and `Tokenizer.char_level(chars)` (one token per character, as nanoGPT's shakespeare_char).
- `save(path)` writes `tokenizer.json` + `tokenizer_config.json` that transformers' AutoTokenizer loads;
  `to_gguf_metadata()` gives the keys a GGUF exporter writes, which `from_gguf_metadata` reads back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import datetime
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import tokenizers
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors, trainers

from gpts.errors import GptsError
from gpts.fileio import read_json, write_text

CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Tokens that chat templates put at the end of a turn; generation stops there as well as at eos.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>")

# llama.cpp's token types (tokenizer.ggml.token_type).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

GGUF_MODELS = ("gpt2", "llama")

# A trained BPE: "<|endoftext|>" (GPT-2's document separator) is its only special token. Its vocabulary holds the
# 256 byte tokens and that token at least; the upper bound only catches typos (an extra digit).
ENDOFTEXT = "<|endoftext|>"
BPE_MIN_VOCAB, BPE_MAX_VOCAB = 257, 1 << 20

# -- pre-tokenizers, as llama.cpp's src/llama-vocab.cpp picks them from tokenizer.ggml.pre ------------------------

_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN35_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
                 r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_GPT4O_SPLIT = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
                r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
                r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
                r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
                r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_TEKKEN_SPLIT = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
                 r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
                 r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# Each kind: the regexes split in turn (llama.cpp applies them one after the other, keeping the matches and the
# text between them), then byte-level encoding. "gpt-2" is ByteLevel's own regex; "smollm" isolates digits first.
_PRE_KINDS: dict[str, tuple[str, ...]] = {
    "gpt-2": (),
    "smollm": (r"\p{N}",),
    "llama-bpe": (_LLAMA3_SPLIT,),
    "qwen2": (_QWEN2_SPLIT,),
    "qwen35": (_QWEN35_SPLIT,),
    "gpt-4o": (_GPT4O_SPLIT,),
    "tekken": (_TEKKEN_SPLIT,),
    "default": (r"[\p{P}\$\+<=>\^~\|]+", _GPT2_SPLIT, r"\p{N}+", r"[0-9][0-9][0-9]"),
}
# tokenizer.ggml.pre -> kind, for the names llama.cpp gives these pre-tokenizers.
_PRE_NAMES: dict[str, str] = {
    **dict.fromkeys(("gpt-2", "phi-2", "mpt", "olmo", "jais", "gigachat", "jina-es", "jina-de", "jina-v2-es",
                     "jina-v2-de", "a.x-4.0", "mellum", "modern-bert", "exaone4", "trillion", "granite-docling"),
                    "gpt-2"),
    **dict.fromkeys(("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b", "mellum2"),
                    "smollm"),
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
                     "jina-v5-nano", "dbrx", "smaug-bpe"), "llama-bpe"),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2", "hunyuan",
                     "solar-open"), "qwen2"),
    "qwen35": "qwen35",
    **dict.fromkeys(("gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"), "gpt-4o"),
    "tekken": "tekken",
    "default": "default",
}
# llama.cpp skips the merges for a word that is a token itself (BPE `ignore_merges`) for these names...
_IGNORE_MERGES = {"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
                  "jina-v5-nano", "tekken"}
# ...and adds BOS for these unless tokenizer.ggml.add_bos_token says otherwise.
_ADD_BOS = _IGNORE_MERGES
# The name to_gguf_metadata writes for a (kind, ignore_merges) pair.
_PRE_WRITE_NAME = {(kind, False): kind for kind in _PRE_KINDS if kind not in ("llama-bpe", "tekken")} | {
    ("llama-bpe", True): "llama-bpe", ("llama-bpe", False): "smaug-bpe", ("tekken", True): "tekken"}

# Text that tells the pre-tokenizers above apart (contractions, digits, CJK, marks, whitespace runs, newlines).
_PRE_PROBE = ("Hello World's 'LL I'M don't\n\n  12345 1,234.5 ½ x² 3rd\t\tfoo  bar \r\n 中文字符 日本語 "
              "한국어 😀👍🏽 cafe\u0301s नमस्ते naïve CamelCaseWord HTTPServer a+b=c <tag>~|^$ a/b/ {x}\n  \n$$ 99 ")


def _byte_level_pre_tokenizer(kind: str) -> Any:
    if kind == "gpt-2":
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if kind == "smollm":  # as SmolLM's own tokenizer.json spells it: the same split as llama.cpp's
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r), behavior="isolated") for r in _PRE_KINDS[kind]]
                                   + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


@lru_cache(maxsize=None)
def _probe_splits(kind: str) -> tuple[str, ...]:
    return tuple(s for s, _ in _byte_level_pre_tokenizer(kind).pre_tokenize_str(_PRE_PROBE))


# -- chat templates -------------------------------------------------------------------------------------------


def _raise_exception(message: str) -> None:
    import jinja2

    raise jinja2.exceptions.TemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    # Jinja's own tojson escapes HTML characters; chat templates expect plain JSON.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=16)
def _compile_template(source: str) -> Any:
    """The template compiled as transformers compiles chat templates: sandboxed, trim_blocks/lstrip_blocks."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now)
    try:
        return env.from_string(source)
    except jinja2.TemplateError as e:
        where = f" (line {e.lineno})" if getattr(e, "lineno", None) else ""
        raise GptsError(f"The chat template is malformed{where}: {e}.",
                        "Fix chat_template in tokenizer_config.json (or chat_template.jinja).") from e


# -- helpers --------------------------------------------------------------------------------------------------


def _token_content(value: Any) -> str | None:
    """A special token as tokenizer_config.json spells it: a string, or an AddedToken dict with "content"."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _pick_template(value: Any) -> str | None:
    """chat_template is a string, or a list of {"name", "template"} of which "default" is the one to use."""
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        value = named.get("default", next(iter(named.values()), None))
    return value if isinstance(value, str) and value else None


def _merge_strings(merges: Iterable[Any]) -> list[str]:
    """Merges as "a b" strings: tokenizers writes [a, b] pairs (>=0.20) or "a b" strings (older)."""
    return [m if isinstance(m, str) else " ".join(m) for m in merges]


def _merges_from_scores(tokens: list[str], scores: list[float], types: list[int] | None) -> list[tuple[str, str]]:
    """SentencePiece BPE has no merges, only scores: every split of a normal token into two tokens is a merge,
    best score first (as transformers recovers them for Llama)."""
    vocab = _first_ids(tokens)
    found = []
    for i, (token, score) in enumerate(zip(tokens, scores)):
        if (types is not None and types[i] != NORMAL) or vocab[token] != i:
            continue
        splits = [(token[:k], token[k:]) for k in range(1, len(token)) if token[:k] in vocab and token[k:] in vocab]
        splits.sort(key=lambda lr: (vocab[lr[0]], vocab[lr[1]]))
        found.extend((score, left, right) for left, right in splits)
    found.sort(key=lambda m: (m[0], len(m[1]), len(m[2])), reverse=True)  # stable: ties keep vocabulary order
    return [(left, right) for _, left, right in found]


def _gguf_merges(merges: list[str]) -> list[tuple[str, str]]:
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    if not all(len(p) == 2 for p in pairs):
        raise GptsError("tokenizer.ggml.merges holds an entry that is not an 'a b' pair.",
                        "The file is corrupt; convert the model again.")
    return pairs  # type: ignore[return-value]


def _first_ids(tokens: list[str]) -> dict[str, int]:
    vocab: dict[str, int] = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)  # a duplicate token keeps its first id
    return vocab


def _gguf_byte_level_backend(tokens: list[str], merges: list[str], pre: str) -> tokenizers.Tokenizer:
    """Byte-level BPE ("gpt2") split the way llama.cpp splits for this tokenizer.ggml.pre."""
    kind = _PRE_NAMES.get(pre)
    if kind is None:
        raise GptsError(f"Unsupported GGUF pre-tokenizer {pre!r} (tokenizer.ggml.pre).",
                        f"gpts knows: {', '.join(sorted(_PRE_NAMES))}.")
    backend = tokenizers.Tokenizer(models.BPE(_first_ids(tokens), _gguf_merges(merges), fuse_unk=False,
                                              ignore_merges=pre in _IGNORE_MERGES))
    backend.pre_tokenizer = _byte_level_pre_tokenizer(kind)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    return backend


def _gguf_sentencepiece_backend(tokens: list[str], types: list[int] | None, fields: dict[str, Any],
                                unk: str | None) -> tokenizers.Tokenizer:
    """SentencePiece BPE ("llama"): spaces as "▁", byte fallback, merges recovered from the scores."""
    scores = fields.get("tokenizer.ggml.scores")
    if fields.get("tokenizer.ggml.merges"):
        merges = _gguf_merges(fields["tokenizer.ggml.merges"])
    elif isinstance(scores, list) and len(scores) == len(tokens):
        merges = _merges_from_scores(tokens, [float(s) for s in scores], types)
    else:
        raise GptsError("A 'llama' GGUF tokenizer needs tokenizer.ggml.scores (one per token).",
                        "The file is incomplete; convert the model again.")
    add_space_prefix = bool(fields.get("tokenizer.ggml.add_space_prefix", True))
    backend = tokenizers.Tokenizer(models.BPE(_first_ids(tokens), merges, unk_token=unk, fuse_unk=True,
                                              byte_fallback=True))
    backend.normalizer = _sentencepiece_normalizer(add_space_prefix)
    backend.decoder = _sentencepiece_decoder(add_space_prefix)
    return backend


def _scores_from_merges(tokens: list[str], merges: list[str]) -> list[float]:
    """SentencePiece scores that keep the merge order: the earlier a token's first merge, the higher its score;
    tokens no merge makes (characters, bytes, special tokens) score below all of them."""
    rank: dict[str, int] = {}
    for r, m in enumerate(merges):
        rank.setdefault(m.replace(" ", "", 1), r)
    return [-float(rank.get(t, len(merges)) + 1) for t in tokens]


def _sentencepiece_normalizer(add_space_prefix: bool) -> Any:
    replace = normalizers.Replace(" ", "\u2581")
    return normalizers.Sequence([normalizers.Prepend("\u2581"), replace]) if add_space_prefix else replace


def _sentencepiece_decoder(add_space_prefix: bool) -> Any:
    steps = [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    return decoders.Sequence(steps + [decoders.Strip(" ", 1, 0)] if add_space_prefix else steps)


_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def has_tokenizer_files(path: Path) -> bool:
    """Whether directory `path` holds a tokenizer `Tokenizer.from_dir` reads: tokenizer.json, or GPT-2 style
    vocab.json + merges.txt (one without the other is no tokenizer)."""
    return (path / "tokenizer.json").is_file() or ((path / "vocab.json").is_file() and (path / "merges.txt").is_file())


def check_bpe_vocab_size(vocab_size: int) -> None:
    if not BPE_MIN_VOCAB <= vocab_size <= BPE_MAX_VOCAB:
        raise GptsError(f"A BPE vocabulary of {vocab_size} tokens is out of range.",
                        f"Choose {BPE_MIN_VOCAB} (the 256 bytes + {ENDOFTEXT}) to {BPE_MAX_VOCAB:,} tokens, "
                        "e.g. bpe:8192 for a small corpus or bpe:50257 as GPT-2.")


class Tokenizer:
    def __init__(self, backend: tokenizers.Tokenizer, *, bos_token: str | None = None, eos_token: str | None = None,
                 pad_token: str | None = None, add_bos: bool = False, chat_template: str | None = None,
                 unk_token: str | None = None, pre: str | None = None):
        self.backend = backend
        self.bos_token, self.eos_token, self.pad_token = bos_token, eos_token, pad_token
        self.unk_token = unk_token
        self.add_bos = add_bos
        self.chat_template = chat_template
        # GGUF details that tokenizer.json does not hold; from_gguf_metadata keeps them for to_gguf_metadata.
        self.pre = pre  # tokenizer.ggml.pre
        self._token_types: list[int] | None = None
        self._scores: list[float] | None = None

    def __repr__(self) -> str:
        return (f"Tokenizer(vocab_size={self.vocab_size}, bos={self.bos_token!r}, eos={self.eos_token!r}, "
                f"add_bos={self.add_bos}, chat_template={'own' if self.chat_template else 'ChatML'})")

    # -- loading / saving ---------------------------------------------------------------------------
    @classmethod
    def from_dir(cls, path: str | Path) -> Tokenizer:
        """tokenizer.json, or GPT-2 style vocab.json + merges.txt; reads tokenizer_config.json /
        special_tokens_map.json for special tokens, add_bos_token and chat_template."""
        path = Path(path)
        expected = "tokenizer.json, or vocab.json + merges.txt (GPT-2 style)"
        if not path.is_dir():
            problem = "is a file, not a directory" if path.exists() else "does not exist"
            raise GptsError(f"Tokenizer directory {path} {problem}.", f"Point to a directory holding {expected}.")
        config = read_json(path / "tokenizer_config.json") if (path / "tokenizer_config.json").is_file() else {}
        special_map = (read_json(path / "special_tokens_map.json")
                       if (path / "special_tokens_map.json").is_file() else {})
        if not isinstance(config, dict) or not isinstance(special_map, dict):
            raise GptsError(f"{path}: tokenizer_config.json / special_tokens_map.json must hold a JSON object.",
                            "Replace the file with a valid one.")

        def special(name: str) -> str | None:
            return _token_content(config.get(name)) or _token_content(special_map.get(name))

        if not has_tokenizer_files(path):
            have = sorted(p.name for p in path.iterdir())
            raise GptsError(f"No tokenizer in {path} (it holds: {', '.join(have) or 'nothing'}).",
                            f"Expected {expected}.")
        if (path / "tokenizer.json").is_file():
            try:
                backend = tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
            except Exception as e:  # tokenizers raises plain Exception for bad files
                raise GptsError(f"Cannot read {path / 'tokenizer.json'}: {e}.",
                                "The file is corrupt or from a newer tokenizers version; replace it.") from e
            slow = False
        else:
            backend = cls._gpt2_backend(path / "vocab.json", path / "merges.txt")
            slow = True

        names = {n: special(n) for n in ("bos_token", "eos_token", "pad_token", "unk_token")}
        if "<|endoftext|>" in backend.get_vocab():  # what GPT2TokenizerFast assumes where nothing is said
            for name in ("bos_token", "eos_token", "unk_token"):
                if name not in config and name not in special_map:
                    names[name] = "<|endoftext|>"
        if slow:
            cls._add_slow_tokens(backend, path, config, special_map, names)
        tok = cls(backend, bos_token=names["bos_token"], eos_token=names["eos_token"], pad_token=names["pad_token"],
                  unk_token=names["unk_token"])
        add_bos = config.get("add_bos_token")
        tok.add_bos = bool(add_bos) if isinstance(add_bos, bool) else tok._post_processor_adds_bos(backend)
        template = _pick_template(config.get("chat_template"))
        if (path / "chat_template.jinja").is_file():
            template = (path / "chat_template.jinja").read_text(encoding="utf-8")
        elif template is None and (path / "chat_template.json").is_file():  # processors save it there
            saved = read_json(path / "chat_template.json")
            template = _pick_template(saved.get("chat_template") if isinstance(saved, dict) else None)
        tok.chat_template = template
        return tok

    @classmethod
    def train_bpe(cls, texts: Iterable[str], vocab_size: int) -> Tokenizer:
        """A new byte-level BPE learned from `texts` (any iterable, consumed once, so a corpus can stream
        through): GPT-2's pre-tokenizer and byte alphabet, at most `vocab_size` tokens (fewer when the texts
        run out of pairs to merge), "<|endoftext|>" as id 0 and the bos/eos/unk token."""
        check_bpe_vocab_size(vocab_size)
        backend = tokenizers.Tokenizer(models.BPE())
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        backend.post_processor = processors.ByteLevel(trim_offsets=False)
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[ENDOFTEXT], show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        backend.train_from_iterator(texts, trainer)
        return cls(backend, bos_token=ENDOFTEXT, eos_token=ENDOFTEXT, unk_token=ENDOFTEXT)

    @classmethod
    def char_level(cls, chars: Iterable[str]) -> Tokenizer:
        """One token per character: the distinct characters of `chars` in sorted order, id = position (nanoGPT's
        shakespeare_char vocabulary). No special tokens; characters outside the vocabulary are dropped on encode."""
        vocab = {c: i for i, c in enumerate(sorted(set(chars)))}
        if not vocab or any(len(c) != 1 for c in vocab):
            raise ValueError("char_level needs single characters, at least one")
        # A BPE without merges over the unsplit text is a character tokenizer; Fuse decodes without spaces.
        backend = tokenizers.Tokenizer(models.BPE(vocab, []))
        backend.decoder = decoders.Fuse()
        return cls(backend)

    @staticmethod
    def _gpt2_backend(vocab_file: Path, merges_file: Path) -> tokenizers.Tokenizer:
        """Byte-level BPE as transformers' GPT2TokenizerFast builds it from vocab.json + merges.txt."""
        try:
            vocab, merges = models.BPE.read_file(str(vocab_file), str(merges_file))
        except Exception as e:
            raise GptsError(f"Cannot read {vocab_file} / {merges_file}: {e}.",
                            "vocab.json must map tokens to ids and merges.txt hold one 'a b' pair a line.") from e
        backend = tokenizers.Tokenizer(models.BPE(vocab, merges, dropout=None, continuing_subword_prefix="",
                                                  end_of_word_suffix="", fuse_unk=False))
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        backend.post_processor = processors.ByteLevel(trim_offsets=False)
        return backend

    @staticmethod
    def _add_slow_tokens(backend: tokenizers.Tokenizer, path: Path, config: dict[str, Any],
                         special_map: dict[str, Any], names: dict[str, str | None]) -> None:
        """Without tokenizer.json the added tokens live in tokenizer_config.json (added_tokens_decoder),
        added_tokens.json and the special-token names."""
        added: list[tuple[int, AddedToken]] = []
        decoder = config.get("added_tokens_decoder")
        if isinstance(decoder, dict):
            for key, value in decoder.items():
                if isinstance(value, dict) and _token_content(value) and str(key).isdigit():
                    added.append((int(key), AddedToken(_token_content(value), special=bool(value.get("special", True)),
                                                       normalized=bool(value.get("normalized", False)))))
        if (path / "added_tokens.json").is_file():
            extra = read_json(path / "added_tokens.json")
            if isinstance(extra, dict):
                added += [(int(i), AddedToken(t, special=False, normalized=False)) for t, i in extra.items()
                          if isinstance(i, int)]
        for _, token in sorted(added, key=lambda it: it[0]):  # in id order, so new tokens get their ids
            (backend.add_special_tokens if token.special else backend.add_tokens)([token])
        extra_specials = special_map.get("additional_special_tokens") or config.get("additional_special_tokens") or []
        specials = [n for n in names.values() if n] + [_token_content(t) for t in extra_specials]
        vocab = backend.get_vocab()
        backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials if t in vocab])

    def _post_processor_adds_bos(self, backend: tokenizers.Tokenizer) -> bool:
        bos = self.bos_id
        if bos is None or backend.post_processor is None:
            return False
        with_special = backend.encode("a", add_special_tokens=True).ids[:1]
        return with_special == [bos] and backend.encode("a", add_special_tokens=False).ids[:1] != [bos]

    @classmethod
    def from_gguf_metadata(cls, fields: dict[str, Any]) -> Tokenizer:
        """From a GGUF file's `tokenizer.ggml.*` / `tokenizer.chat_template` metadata (plain Python values)."""
        model = fields.get("tokenizer.ggml.model")
        tokens = fields.get("tokenizer.ggml.tokens")
        if model not in GGUF_MODELS:
            raise GptsError(f"Unsupported GGUF tokenizer model {model!r}.",
                            f"gpts reads tokenizer.ggml.model {' and '.join(repr(m) for m in GGUF_MODELS)} "
                            "(byte-level BPE as GPT-2/Llama-3/SmolLM, SentencePiece BPE as Llama-2).")
        if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
            raise GptsError("The GGUF metadata has no tokenizer.ggml.tokens list.",
                            "The file is incomplete; convert the model again.")
        n = len(tokens)
        types = fields.get("tokenizer.ggml.token_type")
        if types is not None and (not isinstance(types, list) or len(types) != n):
            raise GptsError(f"tokenizer.ggml.token_type has {len(types) if isinstance(types, list) else 'no'} entries "
                            f"for {n} tokens.", "The file is inconsistent; convert the model again.")
        types = [int(t) for t in types] if types is not None else None

        def token_at(key: str) -> str | None:
            i = fields.get(f"tokenizer.ggml.{key}")
            if i is None:
                return None
            if not isinstance(i, int) or not 0 <= i < n:
                raise GptsError(f"tokenizer.ggml.{key} is {i!r}, not a token id below {n}.",
                                "The file is inconsistent; convert the model again.")
            return tokens[i]

        unk = token_at("unknown_token_id")
        pre = (fields.get("tokenizer.ggml.pre") or "default") if model == "gpt2" else None
        if model == "gpt2":
            backend = _gguf_byte_level_backend(tokens, fields.get("tokenizer.ggml.merges") or [], pre)
            add_bos_default = pre in _ADD_BOS
        else:
            backend = _gguf_sentencepiece_backend(tokens, types, fields, unk)
            add_bos_default = True

        # Control and unknown tokens are special; user-defined ones (e.g. <think>) are matched whole but not special.
        if types is not None:
            specials = [t for t, k in zip(tokens, types) if k in (CONTROL, UNKNOWN)]
            backend.add_tokens([AddedToken(t, special=False, normalized=False)
                                for t, k in zip(tokens, types) if k == USER_DEFINED])
        else:
            specials = [token_at(k) for k in ("bos_token_id", "eos_token_id", "unknown_token_id", "padding_token_id")]
        backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials if t])
        add_bos = fields.get("tokenizer.ggml.add_bos_token", add_bos_default)
        tok = cls(backend, bos_token=token_at("bos_token_id"), eos_token=token_at("eos_token_id"),
                  pad_token=token_at("padding_token_id"), unk_token=unk, add_bos=bool(add_bos),
                  chat_template=fields.get("tokenizer.chat_template") or None, pre=pre)
        tok._token_types = types
        if model == "llama" and isinstance(fields.get("tokenizer.ggml.scores"), list):
            tok._scores = [float(s) for s in fields["tokenizer.ggml.scores"]]
        if add_bos and tok.bos_id is not None:
            tok.backend.post_processor = tok._bos_post_processor()
        return tok

    def _bos_post_processor(self) -> Any:
        bos = self.bos_token
        return processors.TemplateProcessing(single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
                                             special_tokens=[(bos, self.bos_id)])

    @property
    def gguf_model(self) -> str:
        """"gpt2" (byte-level BPE) or "llama" (SentencePiece BPE with byte fallback), as GGUF names them."""
        model = self.backend.model
        if isinstance(model, models.BPE) and model.byte_fallback:
            return "llama"
        if isinstance(model, models.BPE) and "ByteLevel(" in repr(self.backend.pre_tokenizer):
            return "gpt2"
        raise GptsError(f"This {type(model).__name__} tokenizer has no GGUF equivalent.",
                        "GGUF (llama.cpp) takes byte-level BPE or SentencePiece BPE with byte fallback.")

    def _gguf_pre(self) -> str:
        """tokenizer.ggml.pre for a byte-level tokenizer: the name it was loaded with, else the known
        pre-tokenizer that splits a probe text the same way."""
        if self.pre is not None:
            return self.pre
        # NFC (Qwen2) is dropped, as llama.cpp's converter drops it; other normalizers change the text too much.
        if self.backend.normalizer is not None and not isinstance(self.backend.normalizer, normalizers.NFC):
            raise GptsError("This tokenizer normalizes text before splitting it, which GGUF cannot express.",
                            "Export it as a Hugging Face directory instead.")
        splits = tuple(s for s, _ in self.backend.pre_tokenizer.pre_tokenize_str(_PRE_PROBE))
        ignore = bool(self.backend.model.ignore_merges)
        for kind in _PRE_KINDS:
            if _probe_splits(kind) == splits and (kind, ignore) in _PRE_WRITE_NAME:
                return _PRE_WRITE_NAME[(kind, ignore)]
        raise GptsError("This tokenizer's pre-tokenizer matches none that llama.cpp knows.",
                        f"GGUF export supports the pre-tokenizers {', '.join(_PRE_KINDS)}.")

    def to_gguf_metadata(self) -> dict[str, Any]:
        """The inverse of from_gguf_metadata: the `tokenizer.*` keys to write into a GGUF file."""
        model = self.gguf_model
        vocab = self.backend.get_vocab(with_added_tokens=True)
        n = max(vocab.values()) + 1
        tokens: list[str | None] = [None] * n
        for t, i in vocab.items():
            tokens[i] = t
        types = self._token_types
        if types is None or len(types) != n:
            added = {i: t.special for i, t in self.backend.get_added_tokens_decoder().items()}
            unk = self.token_id(self.unk_token)
            types = [UNUSED if t is None else UNKNOWN if i == unk else
                     (CONTROL if added[i] else USER_DEFINED) if i in added else
                     BYTE if model == "llama" and _BYTE_TOKEN.fullmatch(t) else NORMAL
                     for i, t in enumerate(tokens)]
        tokens = [f"[PAD{i}]" if t is None else t for i, t in enumerate(tokens)]  # ids nothing maps to (rare)
        described = json.loads(self.backend.to_str())
        merges = _merge_strings(described["model"].get("merges") or [])
        meta: dict[str, Any] = {"tokenizer.ggml.model": model,
                                "tokenizer.ggml.pre": self._gguf_pre() if model == "gpt2" else "default",
                                "tokenizer.ggml.tokens": tokens,
                                "tokenizer.ggml.token_type": types}
        if model == "gpt2":
            meta["tokenizer.ggml.merges"] = merges
        else:  # llama.cpp ranks SentencePiece merges by the merged token's score
            scores = self._scores if self._scores is not None and len(self._scores) == n else None
            meta["tokenizer.ggml.scores"] = scores or _scores_from_merges(tokens, merges)
            prepend = json.dumps([described.get("normalizer"), described.get("pre_tokenizer")])
            meta["tokenizer.ggml.add_space_prefix"] = '"Prepend"' in prepend or (
                '"Metaspace"' in prepend and '"never"' not in prepend)
        for key, token in (("bos_token_id", self.bos_token), ("eos_token_id", self.eos_token),
                           ("unknown_token_id", self.unk_token), ("padding_token_id", self.pad_token)):
            if (i := self.token_id(token)) is not None:
                meta[f"tokenizer.ggml.{key}"] = i
        meta["tokenizer.ggml.add_bos_token"] = self.add_bos
        if self.chat_template:
            meta["tokenizer.chat_template"] = self.chat_template
        return meta

    def save(self, path: str | Path) -> None:
        """Write tokenizer.json + tokenizer_config.json (Hugging Face compatible) into directory `path`."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise GptsError(f"Cannot save the tokenizer into {path}: it is a file.", "Pass a directory.")
        backend = tokenizers.Tokenizer.from_str(self.backend.to_str())
        if self._post_processor_adds_bos(backend) != self.add_bos:
            backend.post_processor = (self._bos_post_processor() if self.add_bos else
                                      processors.TemplateProcessing(single="$A:0", pair="$A:0 $B:1"))
        config: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast"}
        config.update({name: getattr(self, name) for name in ("bos_token", "eos_token", "pad_token", "unk_token")})
        config.update(add_bos_token=self.add_bos, add_eos_token=False, clean_up_tokenization_spaces=False)
        if self.chat_template:
            config["chat_template"] = self.chat_template
        path.mkdir(parents=True, exist_ok=True)
        write_text(path / "tokenizer.json", backend.to_str(pretty=True))
        write_text(path / "tokenizer_config.json", json.dumps(config, indent=2, ensure_ascii=False) + "\n")

    # -- ids ----------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def token_id(self, token: str | None) -> int | None:
        return None if token is None else self.backend.token_to_id(token)

    @property
    def bos_id(self) -> int | None:
        return self.token_id(self.bos_token)

    @property
    def eos_id(self) -> int | None:
        return self.token_id(self.eos_token)

    @property
    def eos_ids(self) -> frozenset[int]:
        """The ids that end generation: eos, and the chat template's end-of-turn token when the vocabulary has it."""
        template = self.chat_template or CHATML_TEMPLATE
        ids = {self.token_id(t) for t in END_OF_TURN_TOKENS if t in template} | {self.eos_id}
        return frozenset(i for i in ids if i is not None)

    def encode(self, text: str, add_special: bool = True) -> list[int]:
        """Token ids of `text`; special-token strings in it (e.g. "<|im_start|>") become their ids. With
        add_special, BOS goes first when the model wants it (add_bos)."""
        ids = self.backend.encode(text, add_special_tokens=False).ids
        if add_special and self.add_bos and (bos := self.bos_id) is not None:
            ids.insert(0, bos)
        return ids

    def encode_batch(self, texts: list[str], add_special: bool = True) -> list[list[int]]:
        """encode() for many texts at once (in parallel threads)."""
        bos = self.bos_id if add_special and self.add_bos else None
        return [([bos] if bos is not None else []) + e.ids
                for e in self.backend.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        ids = ids.tolist() if hasattr(ids, "tolist") else [int(i) for i in ids]  # also a tensor or an array
        return self.backend.decode(ids, skip_special_tokens=skip_special)

    @cached_property
    def _byte_fallback_ids(self) -> frozenset[int]:
        """Ids of SentencePiece byte tokens (<0x0A>): a run of them decodes as one piece, so it is never cut."""
        if not (isinstance(self.backend.model, models.BPE) and self.backend.model.byte_fallback):
            return frozenset()
        vocab = self.backend.get_vocab(with_added_tokens=False)
        return frozenset(i for t, i in vocab.items() if _BYTE_TOKEN.fullmatch(t))

    @cached_property
    def _byte_level_chars(self) -> dict[str, int] | None:
        """GPT-2's table from the characters a byte-level vocabulary spells bytes with back to the bytes; None for
        other vocabularies."""
        if not isinstance(self.backend.decoder, decoders.ByteLevel):
            return None
        printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
        others = [b for b in range(256) if b not in printable]
        return {**{chr(b): b for b in printable}, **{chr(256 + i): b for i, b in enumerate(others)}}

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one token stands for. Its decoded text cannot say: a token may hold part of a UTF-8 character
        (OpenAI's logprobs carry these bytes so that a client can join them)."""
        token = self.backend.id_to_token(token_id)
        if token is None or token_id in self._special_ids:
            return (token or "").encode()
        if (table := self._byte_level_chars) is not None:
            return bytes(table[c] for c in token) if all(c in table for c in token) else token.encode()
        if token_id in self._byte_fallback_ids:
            return bytes([int(token[3:5], 16)])
        return token.replace("\u2581", " ").encode()

    @cached_property
    def _special_ids(self) -> frozenset[int]:
        return frozenset(i for i, t in self.backend.get_added_tokens_decoder().items() if t.special)

    def stream_decoder(self, skip_special: bool = False) -> StreamDecoder:
        return StreamDecoder(self, skip_special=skip_special)

    # -- chat ---------------------------------------------------------------------------------------
    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True,
                            **kwargs: Any) -> str:
        """The conversation as the model's own chat template renders it (ChatML when it has none).
        Extra keyword arguments reach the template (e.g. tools=..., enable_thinking=False)."""
        import jinja2

        template = _compile_template(self.chat_template or CHATML_TEMPLATE)
        specials = {name: getattr(self, name) for name in ("bos_token", "eos_token", "pad_token", "unk_token")
                    if getattr(self, name) is not None}
        context = {"tools": None, "documents": None, **specials, **kwargs}
        try:
            return template.render(messages=messages, add_generation_prompt=add_generation_prompt, **context)
        except jinja2.TemplateError as e:
            raise GptsError(f"The chat template failed on these messages: {e}.",
                            "Check the messages (roles, order), or fix the template.") from e
        except (TypeError, KeyError, AttributeError, ValueError, IndexError) as e:
            raise GptsError(f"The chat template failed on these messages: {type(e).__name__}: {e}.",
                            "Messages are a list of {\"role\": ..., \"content\": ...} dicts.") from e

    def encode_chat(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> list[int]:
        """Token ids of the rendered conversation; BOS is added unless the template already wrote it."""
        text = self.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
        return self.encode(text, add_special=not (self.bos_token and text.startswith(self.bos_token)))


class StreamDecoder:
    """push(token_id) returns the new text that is complete so far (never half a UTF-8 character);
    flush() returns whatever is left at the end.

    All pushes plus the flush concatenate to tokenizer.decode(all ids). Each push decodes a short window:
    the tokens since the last boundary where the text was complete, plus the ones before it for context
    (decoders that strip a leading space, join tokens with spaces, etc. see the same neighbours as in a
    full decode), and emits what that window adds beyond its context.
    """

    def __init__(self, tokenizer: Tokenizer, skip_special: bool = False):
        self._tokenizer = tokenizer
        self._skip_special = skip_special
        # Tokens that cannot end a piece of text: byte tokens (their run may go on) and, when skipped, special
        # tokens (the decoder never sees them, so a byte run goes on across them).
        self._hold = tokenizer._byte_fallback_ids | (tokenizer._special_ids if skip_special else frozenset())
        self._reset()

    def _reset(self) -> None:
        self._ids: list[int] = []
        self._start = 0  # the window: ids[_start:]; ids[_start:_read] were emitted already and give context
        self._read = 0
        self._context = ""  # decode(ids[_start:_read])

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special=self._skip_special)

    def push(self, token_id: int) -> str:
        self._ids.append(int(token_id))
        if token_id in self._hold:
            return ""
        text = self._decode(self._ids[self._start:])
        if len(text) <= len(self._context) or text.endswith("\ufffd"):  # nothing new, or a character unfinished
            return ""
        new = text[len(self._context):]
        self._start, self._read = self._read, len(self._ids)
        self._context = self._decode(self._ids[self._start:self._read])
        return new

    def flush(self) -> str:
        """The rest of the text (an unfinished character as U+FFFD, as decode gives it); starts a new stream."""
        rest = self._decode(self._ids[self._start:])[len(self._context):]
        self._reset()
        return rest
