"""Text <-> token ids, backed by the `tokenizers` library; plus special tokens, streaming
detokenization and chat templates.

SKELETON: the methods that raise NotImplementedError are being written; the signatures are the contract.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tokenizers

CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class Tokenizer:
    def __init__(self, backend: tokenizers.Tokenizer, *, bos_token: str | None = None, eos_token: str | None = None,
                 pad_token: str | None = None, add_bos: bool = False, chat_template: str | None = None):
        self.backend = backend
        self.bos_token, self.eos_token, self.pad_token = bos_token, eos_token, pad_token
        self.add_bos = add_bos
        self.chat_template = chat_template

    # -- loading / saving ---------------------------------------------------------------------------
    @classmethod
    def from_dir(cls, path: str | Path) -> Tokenizer:
        """tokenizer.json, or GPT-2 style vocab.json + merges.txt; reads tokenizer_config.json /
        special_tokens_map.json for special tokens, add_bos_token and chat_template."""
        raise NotImplementedError

    @classmethod
    def from_gguf_metadata(cls, fields: dict[str, Any]) -> Tokenizer:
        """From a GGUF file's `tokenizer.ggml.*` / `tokenizer.chat_template` metadata (plain Python values)."""
        raise NotImplementedError

    def to_gguf_metadata(self) -> dict[str, Any]:
        """The inverse of from_gguf_metadata: the `tokenizer.*` keys to write into a GGUF file."""
        raise NotImplementedError

    def save(self, path: str | Path) -> None:
        """Write tokenizer.json + tokenizer_config.json (Hugging Face compatible) into directory `path`."""
        raise NotImplementedError

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
    def pad_id(self) -> int | None:
        return self.token_id(self.pad_token)

    def encode(self, text: str, add_special: bool = True) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: list[int], skip_special: bool = False) -> str:
        raise NotImplementedError

    def stream_decoder(self) -> "StreamDecoder":
        raise NotImplementedError

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        raise NotImplementedError


class StreamDecoder:
    """push(token_id) returns the new text that is complete so far (never half a UTF-8 character);
    flush() returns whatever is left at the end."""

    def push(self, token_id: int) -> str:
        raise NotImplementedError

    def flush(self) -> str:
        raise NotImplementedError
