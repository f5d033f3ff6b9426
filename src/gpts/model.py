"""A decoder-only transformer, in two families, in one file.

- GPT-2: learned position embeddings, LayerNorm, GELU MLP, biases, tied embeddings.
- Llama: rotary position embeddings (RoPE), RMSNorm, SwiGLU MLP, grouped-query attention, no biases.

Shapes in comments: B batch, T new tokens this call, S cached + new tokens, C n_embd,
nh query heads, nkv key/value heads, hs head size, V vocabulary.

The state-dict names here are the native checkpoint format; every importer maps onto them
(see gpts/weights/*.py: one name table per source format).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from gpts.config import Config
from gpts.errors import GptsError


class KVCache:
    """Keys and values of every layer, preallocated to `max_len` slots and addressed by position.

    Slots [0, length) hold the keys/values of tokens already seen; a forward pass writes its T new
    tokens at [length, length + T) and then advances `length`. Setting `length` back rewinds the
    cache (reuse a shared prompt prefix); `select` picks batch rows (one prompt, many samples).
    """

    def __init__(self, config: Config, batch_size: int, max_len: int, dtype: torch.dtype, device: torch.device | str):
        shape = (config.n_layer, batch_size, config.n_kv_head, max_len, config.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.length = 0

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this layer's new keys/values (B, nkv, T, hs); return all of them so far (B, nkv, S, hs)."""
        end = self.length + k.shape[2]
        self.k[layer, :, :, self.length:end] = k
        self.v[layer, :, :, self.length:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def select(self, rows: torch.Tensor) -> None:
        """Keep (and reorder or repeat) the batch rows given by index tensor `rows`."""
        self.k = self.k.index_select(1, rows)
        self.v = self.v.index_select(1, rows)


class SlotCache:
    """The batching engine's cache: `slots` independent rows, each with its own length, growing on demand.

    Every forward pass goes through a view: `prefill(slot, start)` writes T new tokens of one slot at
    [start, start + T); `decode(cols, S)` writes one token for each of the slots [0, B) at its own column cols[b]
    and returns keys [0, S) (the caller's mask hides each row's columns past its own). Both views look to the
    model like a KVCache (update, length, max_len).
    """

    def __init__(self, config: Config, slots: int, dtype: torch.dtype, device: torch.device | str, max_len: int = 64):
        self.config, self.slots = config, slots
        self.k = self.v = torch.zeros(0)
        self._alloc(min(max_len, config.context_length), dtype, device)

    def _alloc(self, max_len: int, dtype: torch.dtype, device: torch.device | str) -> None:
        c = self.config
        shape = (c.n_layer, self.slots, c.n_kv_head, max_len, c.head_dim)
        k, v = torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device)
        if self.k.dim() == 5:  # growing: keep what the slots hold
            k[:, :, :, :self.k.shape[3]], v[:, :, :, :self.k.shape[3]] = self.k, self.v
        self.k, self.v = k, v

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    def ensure(self, length: int) -> None:
        """Room for `length` tokens per slot: doubled as needed (the copy is rare), never past the context."""
        if length > self.max_len:
            new = min(max(length, 2 * self.max_len), self.config.context_length)
            self._alloc(new, self.k.dtype, self.k.device)

    def shrink(self, length: int) -> None:
        """Give back the memory past `length` tokens per slot (what the slots hold up to there stays)."""
        if length < self.max_len:
            self.k, self.v = self.k[:, :, :, :length].clone(), self.v[:, :, :, :length].clone()

    def copy(self, source: int, target: int, length: int) -> None:
        """Copy the first `length` columns of slot `source` into slot `target` (a shared prompt prefix)."""
        self.k[:, target, :, :length] = self.k[:, source, :, :length]
        self.v[:, target, :, :length] = self.v[:, source, :, :length]

    def prefill(self, slot: int, start: int) -> _PrefillView:
        return _PrefillView(self, slot, start)

    def decode(self, cols: torch.Tensor, S: int) -> _DecodeView:
        return _DecodeView(self, cols, S)


class _PrefillView:
    def __init__(self, cache: SlotCache, slot: int, start: int):
        self.cache, self.slot, self.length = cache, slot, start

    @property
    def max_len(self) -> int:
        return self.cache.max_len

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """k, v (1, nkv, T, hs) -> this slot's keys/values so far (1, nkv, S, hs)."""
        s, end = self.slot, self.length + k.shape[2]
        self.cache.k[layer, s:s + 1, :, self.length:end] = k
        self.cache.v[layer, s:s + 1, :, self.length:end] = v
        return self.cache.k[layer, s:s + 1, :, :end], self.cache.v[layer, s:s + 1, :, :end]


class _DecodeView:
    def __init__(self, cache: SlotCache, cols: torch.Tensor, S: int):
        self.cache, self.cols, self.S = cache, cols, S
        self.rows = torch.arange(len(cols), device=cols.device)
        self.length = S - 1  # the model reads start = S - 1 for its one new token (positions come from pos)

    @property
    def max_len(self) -> int:
        return self.cache.max_len

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """k, v (B, nkv, 1, hs), one token per slot [0, B) at its column -> keys/values (B, nkv, S, hs)."""
        B = len(self.cols)
        self.cache.k[layer, self.rows, :, self.cols] = k[:, :, 0]
        self.cache.v[layer, self.rows, :, self.cols] = v[:, :, 0]
        return self.cache.k[layer, :B, :, :self.S], self.cache.v[layer, :B, :, :self.S]


# -- rotary position embeddings (Llama) -------------------------------------------------------------


def rope_inv_freq(config: Config, device: torch.device) -> torch.Tensor:
    """Inverse frequencies (hs/2,), with Llama-3 style long-context scaling when configured."""
    hs = config.head_dim
    inv_freq = 1.0 / (config.rope_base ** (torch.arange(0, hs, 2, dtype=torch.int64, device=device).float() / hs))
    scaling = config.rope_scaling
    if not scaling:
        return inv_freq
    if scaling.get("rope_type", scaling.get("type")) != "llama3":
        raise GptsError(f"Unsupported rope_scaling {scaling!r}.", "Only Llama-3 style scaling (rope_type 'llama3') is supported.")
    factor = scaling["factor"]
    low, high = scaling.get("low_freq_factor", 1.0), scaling.get("high_freq_factor", 4.0)
    old_len = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    return torch.where(is_medium, smoothed, scaled)


def rope_cos_sin(config: Config, pos: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables for positions pos (B, T), each (B, 1, T, hs)."""
    inv_freq = rope_inv_freq(config, pos.device)
    freqs = pos[..., None].float() * inv_freq  # (B, T, hs/2)
    emb = torch.cat((freqs, freqs), dim=-1)[:, None]  # (B, 1, T, hs)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, n, T, hs) by position; halves layout (Hugging Face's), not interleaved pairs (llama.cpp's)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


# -- blocks ----------------------------------------------------------------------------------------


class CausalSelfAttention(nn.Module):
    def __init__(self, config: Config, layer: int):
        super().__init__()
        self.layer = layer
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        kv_dim = config.n_kv_head * config.head_dim
        self.q_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.k_proj = nn.Linear(config.n_embd, kv_dim, bias=config.bias)
        self.v_proj = nn.Linear(config.n_embd, kv_dim, bias=config.bias)
        self.o_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None,
                cache: KVCache | None, mask: torch.Tensor | None) -> torch.Tensor:
        B, T, C = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, nkv, T, hs)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, nkv, T, hs)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if cache is not None:
            k, v = cache.update(self.layer, k, v)  # (B, nkv, S, hs)
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # PyTorch's CPU attention backward is ~3x slower in bfloat16 than in float32, so under CPU
            # autocast attention runs in float32 and only the matmuls use bfloat16 (see bench/README.md).
            with torch.autocast("cpu", enabled=False):
                y = self._attend(q.float(), k.float(), v.float(), mask).to(q.dtype)
        else:
            y = self._attend(q, k, v, mask)  # (B, nh, T, hs)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, C))

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        # mask None means "every key is visible": either plain causal prefill (T == S) or one new token.
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and q.shape[2] > 1,
                                              enable_gqa=self.n_kv_head != self.n_head)


class MLP(nn.Module):
    """GPT-2: down(gelu(up(x))). Llama (SwiGLU): down(silu(gate(x)) * up(x))."""

    def __init__(self, config: Config):
        super().__init__()
        hidden = config.intermediate_size
        self.gate_proj = nn.Linear(config.n_embd, hidden, bias=config.bias) if config.arch == "llama" else None
        self.up_proj = nn.Linear(config.n_embd, hidden, bias=config.bias)
        self.down_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_proj is None:
            return self.down_proj(F.gelu(self.up_proj(x), approximate="tanh"))
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def _embedding(num: int, dim: int) -> nn.Embedding:
    # Handing nn.Embedding its (uninitialized) weight skips its random init: _init_weights does that, and
    # random init on the meta device (from_state_dict) would import torch's compiler, about a second.
    return nn.Embedding(num, dim, _weight=torch.empty(num, dim))


def make_norm(config: Config) -> nn.Module:
    if config.arch == "llama":
        return nn.RMSNorm(config.n_embd, eps=config.norm_eps)
    return nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias)


class Block(nn.Module):
    def __init__(self, config: Config, layer: int):
        super().__init__()
        self.norm_1 = make_norm(config)
        self.attn = CausalSelfAttention(config, layer)
        self.norm_2 = make_norm(config)
        self.mlp = MLP(config)

    def forward(self, x, rope, cache, mask):
        x = x + self.attn(self.norm_1(x), rope, cache, mask)
        return x + self.mlp(self.norm_2(x))


# -- the model -------------------------------------------------------------------------------------


class GPT(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        self.wte = _embedding(config.vocab_size, config.n_embd)
        self.wpe = _embedding(config.context_length, config.n_embd) if config.arch == "gpt2" else None
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.norm_f = make_norm(config)
        self.lm_head = None if config.tie_embeddings else nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if not any(p.is_meta for p in self.parameters()):
            self._init_weights()

    def _init_weights(self) -> None:
        # GPT-2's scheme: N(0, 0.02), with the residual projections scaled down by depth so the
        # residual stream's variance does not grow with the number of layers.
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, 0.0, 0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for block in self.blocks:
            for proj in (block.attn.o_proj, block.mlp.down_proj):
                nn.init.normal_(proj.weight, 0.0, 0.02 / math.sqrt(2 * self.config.n_layer))

    @classmethod
    def from_state_dict(cls, config: Config, state_dict: dict[str, torch.Tensor]) -> GPT:
        """Build a model around existing tensors without first initializing random weights."""
        with torch.device("meta"):
            model = cls(config)
        expected = model.state_dict()
        missing, unexpected = expected.keys() - state_dict.keys(), state_dict.keys() - expected.keys()
        if missing or unexpected:
            raise GptsError(
                f"Checkpoint tensors do not match the {config.arch} model: "
                f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}.",
                "The weights and config.json come from different models; re-export the checkpoint.",
            )
        wrong = [f"{name} is {tuple(state_dict[name].shape)}, the config makes it {tuple(t.shape)}"
                 for name, t in expected.items() if state_dict[name].shape != t.shape]
        if wrong:
            raise GptsError(f"Checkpoint tensors do not fit the config: {'; '.join(wrong[:3])}.",
                            "The weights and config.json come from different models; re-export the checkpoint.")
        model.load_state_dict(state_dict, assign=True)
        return model

    @property
    def dtype(self) -> torch.dtype:
        return self.wte.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.wte.weight.device

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        return KVCache(self.config, batch_size, max_len or self.config.context_length, self.dtype, self.device)

    def forward(self, idx: torch.Tensor, pos: torch.Tensor | None = None, cache: KVCache | None = None,
                key_mask: torch.Tensor | None = None, last_only: bool = False,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, V) for tokens idx (B, T), or (B, 1, V) with last_only.

        pos (B, T): each token's position (default: consecutive after what the cache holds).
        key_mask (B, S): False for slots that hold padding, so no token attends to them.
        mask (B, 1, T, S) bool: where each query may attend, given whole (the engine's rows of different lengths).
        """
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        S = start + T
        limit = min(self.config.context_length, cache.max_len) if cache is not None else self.config.context_length
        if S > limit:
            raise GptsError(
                f"The sequence is {S} tokens long but the model's context holds {limit}.",
                "Shorten the prompt or lower max_new_tokens (or ask for truncation).",
            )
        if pos is None:
            pos = torch.arange(start, S, device=idx.device).expand(B, T)

        x = self.wte(idx)  # (B, T, C)
        rope = None
        if self.wpe is not None:
            x = x + self.wpe(pos)
        else:
            rope = rope_cos_sin(self.config, pos, x.dtype)  # 2 x (B, 1, T, hs)
        if mask is None:
            mask = self._attention_mask(T, start, key_mask, idx.device)
        for block in self.blocks:
            x = block(x, rope, cache, mask)
        if cache is not None:
            cache.length = S
        if last_only:
            x = x[:, -1:]
        x = self.norm_f(x)
        weight = self.wte.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(x, weight)  # (B, T, V)

    @staticmethod
    def _attention_mask(T: int, start: int, key_mask: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
        """Boolean (B|1, 1, T, S) mask, True where a query may attend; None when plain causal suffices."""
        if key_mask is None and (start == 0 or T == 1):
            return None
        S = start + T
        query_slot = torch.arange(start, S, device=device)[:, None]  # (T, 1)
        key_slot = torch.arange(S, device=device)[None, :]  # (1, S)
        mask = (key_slot <= query_slot)[None, None]  # (1, 1, T, S)
        if key_mask is not None:
            # A padding query would see no key at all (softmax over nothing gives NaN, which then
            # leaks through the values of later layers); letting it see itself keeps it finite.
            mask = mask & key_mask[:, None, None, :S] | (key_slot == query_slot)
        return mask
