"""Sizing a training run to the machine it runs on: the memory it may use, what a model needs per token, and the
compute dtype.

The memory estimates are measured, not derived: the peak resident memory of one float32 training step on the CPU
(peak minus what the model, its gradients and AdamW's state hold), for GPT-2 (gpt2-nano, gpt2) and Llama
(SmolLM2-135M) shapes at 256 to 1024 tokens per sequence. Per token, the logits and their gradient take about
16 bytes per vocabulary entry; each block 9 to 12 (GPT-2) or 19 to 24 (Llama) bytes per unit of n_embd +
intermediate_size. Attention adds no T x T term: PyTorch's fused attention does not keep the score matrix.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from gpts.config import Config

LOGIT_BYTES = 16  # per token and vocabulary entry
BLOCK_BYTES = {"gpt2": 12, "llama": 24}  # per token, layer and unit of n_embd + intermediate_size
STATE_BYTES = 16  # per parameter: float32 weight, gradient, and two AdamW moments
SAFETY = 1.25  # the estimates are within 10 % of the measurements; allocators fragment
MEMORY_SHARE = 0.8  # of the memory free when a run starts, what it plans to use


def activation_bytes_per_token(config: Config) -> float:
    """Memory one token of a training batch holds between the forward and the backward pass, with margin."""
    per_block = BLOCK_BYTES[config.arch] * (config.n_embd + config.intermediate_size)
    return SAFETY * (LOGIT_BYTES * config.vocab_size + config.n_layer * per_block)


def parameter_count(config: Config) -> int:
    """The model's parameters, counted on the meta device (no memory, no time)."""
    from gpts.model import GPT

    with torch.device("meta"):
        return GPT(config).num_params()


def state_bytes(config: Config) -> float:
    """Weights, gradients and optimizer state of full training."""
    return SAFETY * STATE_BYTES * parameter_count(config)


def available_memory(device: torch.device) -> int:
    """Bytes a run on `device` may plan to use: a share of what is free now (on a CPU, the system's available
    memory, shared by the processes of this machine)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * MEMORY_SHARE)
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return int(_system_available() * MEMORY_SHARE / local_processes)


def _system_available() -> int:
    try:  # Linux: what the kernel says can be had without swapping
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:  # elsewhere: half of the physical memory
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def native_bfloat16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 matrix products at least as fast as float32. GPUs since Ampere do; on a CPU
    it takes AVX-512 (or Arm's BF16): elsewhere (AVX2 laptops, many AMD desktops) bfloat16 autocast runs ~40x
    slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_dtype(name: str, device: torch.device) -> str:
    """"auto" as the compute dtype this device runs training fastest in; "bfloat16" and "float32" as they are."""
    if name != "auto":
        return name
    return "bfloat16" if native_bfloat16(device) else "float32"


def gigabytes(n: float) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"
