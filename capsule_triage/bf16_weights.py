"""Weights a bf16 backend computes with exactly: each layer's weights rounded to bf16 as the backend will see them.

A bf16 backend (OpenVINO's, PyTorch's autocast) rounds every convolution's weights to bf16 (8 significant bits,
up to 2^-8 of each weight) before it multiplies; OpenVINO and the ONNX export first fold each batch norm into the
convolution before it (weights times ``gamma / sqrt(var + eps)``), so it is the folded weights that are rounded. On
the shipped Lite0 that one rounding, of the first depthwise convolution's 288 weights alone, moved scores by up to
0.2 (``benchmarks/bf16_probe.py``): fp32 and bf16 computed with two different networks.

:func:`round_weights_to_bf16` stores weights that are already what bf16 will make of them: for a convolution
followed by a batch norm, ``w' = bf16(w * s) / s`` with ``s`` the norm's scale, so the folded weights ``w' * s``
are bf16 values (to within an fp32 rounding, which rounding to bf16 removes); other convolutions and linear
layers hold ``bf16(w)``. The rounded weights are a new model: its scores differ from the unrounded one's as
bf16 arithmetic did, and it is evaluated (and its threshold chosen) as stored. What is left between its fp32
and bf16 scores is the rounding of activations, which ``triage train --stability-copy bf16`` trains against.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["conv_norm_pairs", "round_weights_to_bf16", "to_bf16"]


def to_bf16(t: torch.Tensor) -> torch.Tensor:
    """``t`` rounded to the nearest bf16 value (ties to even), kept in ``t``'s dtype."""
    return t.to(torch.bfloat16).to(t.dtype)


def conv_norm_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """(convolution, batch norm) for every batch norm whose input is a convolution's output, found by running
    ``example`` through ``model`` once (any architecture; timm's ``BatchNormAct2d`` is a ``BatchNorm2d``)."""
    made: dict[int, nn.Conv2d] = {}
    pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d]] = []
    hooks = [m.register_forward_hook(lambda m, a, out: made.__setitem__(id(out), m))
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_pre_hook(lambda m, a: pairs.append((made[id(a[0])], m)) if id(a[0]) in made else None)
              for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    return pairs


def round_weights_to_bf16(model: nn.Module, input_size: int) -> int:
    """Round ``model``'s convolution and linear weights in place as described in the module docstring (the
    model is put in eval mode: the norms' running statistics are what gets folded). Returns how many
    convolutions were rounded as folded into their batch norm."""
    model.eval()
    param = next(model.parameters())
    pairs = conv_norm_pairs(model, torch.zeros(1, 3, input_size, input_size, dtype=param.dtype, device=param.device))
    folded = {id(conv) for conv, _ in pairs}
    if len(folded) != len(pairs):  # one convolution feeding two norms: no single set of weights fits both
        raise ValueError("a convolution feeds more than one batch norm; its weights cannot be rounded for both")
    with torch.no_grad():
        for conv, norm in pairs:
            scale = (norm.weight if norm.affine else torch.ones_like(norm.running_var)) / torch.sqrt(norm.running_var + norm.eps)
            scale = scale.view(-1, *([1] * (conv.weight.dim() - 1)))
            safe = torch.where(scale == 0, torch.ones_like(scale), scale)  # a zero scale silences its channel
            conv.weight.copy_(torch.where(scale == 0, to_bf16(conv.weight), to_bf16(conv.weight * safe) / safe))
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and id(m) not in folded:
                m.weight.copy_(to_bf16(m.weight))
    return len(pairs)
