"""Muon: the same update as torch.optim.Muon, batched; Optimizers steps and saves several as one."""

import pytest
import torch
from torch import nn

from gpts.config import Config
from gpts.model import GPT
from gpts.optim import Muon, Optimizers, orthogonalize
from gpts.train import TrainConfig, make_optimizer


def matrices(seed: int) -> list[nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(64, 128), (64, 128), (128, 128), (384, 128), (128, 384)]
    return [nn.Parameter(torch.randn(*s, generator=g) * 0.02) for s in shapes]


def muon_pair_after_steps(steps: int = 3, ns_dtype: torch.dtype = torch.bfloat16
                          ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    ours, theirs = matrices(0), matrices(0)
    mine = Muon(ours, lr=0.02, weight_decay=0.1, momentum=0.9, ns_dtype=ns_dtype)
    reference = torch.optim.Muon(theirs, lr=0.02, weight_decay=0.1, momentum=0.9, adjust_lr_fn="match_rms_adamw")
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for a, b in zip(ours, theirs):
            a.grad = torch.randn(a.shape, generator=g)
            b.grad = a.grad.clone()
        mine.step()
        reference.step()
    return list(zip(ours, theirs, matrices(0)))


def test_muon_takes_the_steps_of_torch_muon(monkeypatch):
    # bfloat16 Newton-Schulz: a batched matmul rounds a little differently from one matrix at a time.
    for ours, theirs, start in muon_pair_after_steps():
        assert (ours - theirs).norm() < 0.04 * (theirs - start).norm()
    # With both iterating in float32 (as gpts does where bfloat16 is slow), the updates are the same.
    monkeypatch.setattr(torch.Tensor, "bfloat16", torch.Tensor.float)
    for ours, theirs, start in muon_pair_after_steps(ns_dtype=torch.float32):
        assert (ours - theirs).norm() < 1e-5 * (theirs - start).norm()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_orthogonalize_flattens_the_spectrum(dtype):
    g = torch.randn(3, 96, 32) @ torch.diag(torch.logspace(-1, 1, 32))  # condition number 100
    singular = torch.linalg.svdvals(orthogonalize(g, steps=5, dtype=dtype).float())
    assert singular.min() > 0.5 and singular.max() < 1.3  # Keller Jordan's quintic lands in about [0.7, 1.2]


def test_muon_refuses_vectors():
    with pytest.raises(ValueError, match="2-D"):
        Muon([nn.Parameter(torch.zeros(4))])


def test_make_optimizer_splits_the_model():
    model = GPT(Config.from_name("llama-nano", vocab_size=64))
    optimizer = make_optimizer(model, TrainConfig(optimizer="muon"))
    assert isinstance(optimizer, Optimizers)
    muon, adamw = optimizer.optimizers
    in_muon = {id(p) for g in muon.param_groups for p in g["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in in_muon}
    assert names == {n for n, p in model.named_parameters() if p.dim() == 2 and n.startswith("blocks.")}
    in_adamw = {id(p) for g in adamw.param_groups for p in g["params"]}
    assert in_muon.isdisjoint(in_adamw) and len(in_muon | in_adamw) == len(list(model.parameters()))
    assert len(list(optimizer.param_groups)) == 3
    assert isinstance(make_optimizer(model, TrainConfig()), torch.optim.AdamW)
