"""Network layers and taps shared by training and scoring: the last linear layer, the embedding it reads, heads."""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn as nn


def last_linear(module: nn.Module) -> nn.Linear:
    """The network's final linear layer (its input is the embedding)."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(module).__name__} has no linear layer to take an embedding from")
    return linears[-1]


@contextmanager
def embedding_tap(module: nn.Module):
    """Within the block, ``tap[0]`` holds the (N, D) input of the last linear layer after each forward."""
    tap: list[torch.Tensor] = []

    def hook(_mod, args):
        tap[:] = [args[0]]

    handle = last_linear(module).register_forward_pre_hook(hook)
    try:
        yield tap
    finally:
        handle.remove()


def _parent_of_last_linear(module: nn.Module) -> tuple[nn.Module, str]:
    found = None
    for parent in module.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Linear):
                found = (parent, name)
    if found is None:
        raise ValueError(f"{type(module).__name__} has no linear layer to put a latent layer before")
    return found


class SigmoidNeuron(nn.Module):
    """One sigmoid neuron as K = 2 logits: (N, D) -> (N, 2) = (0, w.x + b), so that a softmax gives
    (1 - sigmoid, sigmoid): the write-up's probe exactly, in the shape every K-class path expects."""

    def __init__(self, in_features: int, device=None):
        super().__init__()
        self.neuron = nn.Linear(in_features, 1, device=device)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z = self.neuron(h)
        return torch.cat([torch.zeros_like(z), z], 1)


def logits_of(out) -> torch.Tensor:
    """Some heads (ultralytics) return (probs, logits) in eval mode."""
    return out[1] if isinstance(out, (tuple, list)) else out
