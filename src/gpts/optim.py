"""Optimizers: AdamW, or Muon on the hidden weight matrices with AdamW on the rest.

Muon (Keller Jordan, 2024) orthogonalizes each matrix's momentum with a few Newton-Schulz iterations. It reaches
a given loss in about half of AdamW's steps on small GPTs (bench/README.md). `torch.optim.Muon` computes the same
update one matrix at a time; `Muon` here stacks the matrices of one shape and iterates on the stack, which takes
less than half the time on CPU, where a step of a small model is dominated by the number of small matmuls.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # Keller Jordan's quintic: steep at zero, converges to ~[0.7, 1.2]


def orthogonalize(g: torch.Tensor, steps: int, eps: float = 1e-7, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """Newton-Schulz approximation of U V^T for G = U S V^T, on a stack of matrices (..., rows, cols), in `dtype`
    (bfloat16 is enough for its precision, and fast where the hardware computes it natively)."""
    a, b, c = NS_COEFFICIENTS
    x = g.to(dtype)
    tall = x.size(-2) > x.size(-1)
    if tall:  # iterate on the wide side: the Gram matrix is then the smaller one
        x = x.mT
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)  # spectral norm <= Frobenius norm <= 1
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.mT if tall else x


class Muon(torch.optim.Optimizer):
    """torch.optim.Muon's update (Nesterov momentum, decoupled weight decay, Moonshot's "match_rms_adamw" scale,
    so that AdamW's learning rate and weight decay carry over), batched over matrices of the same shape."""

    def __init__(self, params: Iterable[nn.Parameter] | Iterable[dict[str, Any]], lr: float = 1e-3,
                 weight_decay: float = 0.1, momentum: float = 0.95, ns_steps: int = 5,
                 ns_dtype: torch.dtype = torch.bfloat16):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, ns_steps=ns_steps))
        self.ns_dtype = ns_dtype
        for group in self.param_groups:
            if any(p.dim() != 2 for p in group["params"]):
                raise ValueError("Muon updates 2-D weight matrices only; give the others to AdamW")

    @torch.no_grad()
    def step(self, closure: None = None) -> None:
        for group in self.param_groups:
            by_shape: dict[torch.Size, list[nn.Parameter]] = defaultdict(list)
            for p in group["params"]:
                if p.grad is not None:
                    by_shape[p.shape].append(p)
            for shape, params in by_shape.items():
                self._update(params, group, scale=0.2 * math.sqrt(max(shape)))

    def _update(self, params: list[nn.Parameter], group: dict[str, Any], scale: float) -> None:
        grads = [p.grad for p in params]
        bufs = [self.state[p].setdefault("momentum_buffer", torch.zeros_like(p)) for p in params]
        torch._foreach_lerp_(bufs, grads, 1 - group["momentum"])
        nesterov = torch.stack(grads).lerp_(torch.stack(bufs), group["momentum"])
        update = orthogonalize(nesterov, group["ns_steps"], dtype=self.ns_dtype)
        lr = group["lr"]
        torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
        torch._foreach_add_(params, list(update.to(params[0].dtype).unbind()), alpha=-lr * scale)


class Optimizers:
    """Several optimizers over disjoint parameters, stepped as one (the training loop sees a single optimizer)."""

    def __init__(self, *optimizers: torch.optim.Optimizer):
        self.optimizers = optimizers

    @property
    def param_groups(self) -> Iterator[dict[str, Any]]:
        return (g for o in self.optimizers for g in o.param_groups)

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for o, s in zip(self.optimizers, state["optimizers"], strict=True):
            o.load_state_dict(s)
