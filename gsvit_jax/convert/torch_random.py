"""Random but realistic PyTorch EfficientViT weights, for parity tests and benchmarks.

A freshly initialised model has all-zero attention biases, identity BatchNorm statistics and
zero-gamma residual branches, so comparisons against it prove little; these weights exercise all of it.
"""
from __future__ import annotations

from typing import Any


def randomize_(model: Any, seed: int) -> dict[str, Any]:
    """Randomise BN affine params and running stats, counters and attention-bias tables in place;
    refresh cached attention biases (train() then eval()) and return the model's state_dict."""
    import torch
    gen = torch.Generator().manual_seed(seed)
    state_dict = model.state_dict()
    for key, value in state_dict.items():
        if key.endswith('running_mean'):
            value.copy_(torch.randn(value.shape, generator=gen) * 0.1)
        elif key.endswith('running_var'):
            value.copy_(torch.rand(value.shape, generator=gen) + 0.5)
        elif key.endswith('bn.weight'):
            value.copy_(torch.rand(value.shape, generator=gen) + 0.5)
        elif key.endswith('bn.bias'):
            value.copy_(torch.randn(value.shape, generator=gen) * 0.1)
        elif key.endswith('num_batches_tracked'):
            value.fill_(int(torch.randint(1, 1000, (), generator=gen)))
        elif key.endswith('attention_biases'):
            value.copy_(torch.randn(value.shape, generator=gen))
    model.load_state_dict(state_dict)
    model.train()
    model.eval()
    return state_dict
