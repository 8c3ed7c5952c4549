"""Weights stored as a graph backend's bf16 will round them: each layer's folded weights already bf16 values.

OpenVINO's bf16 rounds every convolution's weights to bf16 (8 significant bits, up to 2^-8 of each weight) before
it multiplies, after the ONNX export has folded each batch norm into the convolution before it (weights times
``gamma / sqrt(var + eps)``): it is the folded weights that are rounded. On the shipped Lite0 that one rounding, of
the first depthwise convolution's 288 weights alone, moved scores by up to 0.2 (``benchmarks/bf16_probe.py``): fp32
and bf16 computed with two different networks.

:func:`round_weights_to_bf16` stores weights that are already what that rounding makes of them: for a convolution
followed by a batch norm, ``w' = bf16(w * s) / s`` with ``s`` the norm's scale, so that the folded weights ``w' * s``
are bf16 values (to within an fp32 rounding, which rounding to bf16 removes); other convolutions and linear layers
hold ``bf16(w)``. Then ov-fp32 and ov-bf16 compute with the same weights and only the activations' rounding
separates them (``triage train --stability-copy bf16`` trains against that). PyTorch's autocast does not fold the
norms: it rounds the stored ``w'`` again, so torch-bf16 gains little. The rounded weights are a new model, evaluated
(and given a threshold) as stored.

Architectures whose convolutions standardise their weights in ``forward`` (BiT's ``StdConv2d``) compute with other
weights than the stored ones, and a convolution feeding two norms has no single folded form: :func:`cannot_round`
names them before a training run starts.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

__all__ = ["WEIGHT_PRECISIONS", "cannot_round", "conv_norm_pairs", "rounded_in_place", "round_weights_to_bf16", "to_bf16"]

WEIGHT_PRECISIONS = ("fp32", "bf16")


def to_bf16(t: torch.Tensor) -> torch.Tensor:
    """``t`` rounded to the nearest bf16 value (ties to even), kept in ``t``'s dtype."""
    return t.to(torch.bfloat16).to(t.dtype)


def _example(model: nn.Module, input_size: int) -> torch.Tensor:
    param = next(model.parameters())
    return torch.zeros(1, 3, input_size, input_size, dtype=param.dtype, device=param.device)


def conv_norm_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """(convolution, batch norm) for every batch norm with running statistics whose input is a convolution's output,
    unchanged (no in-place operation in between), found by running ``example`` through ``model`` once in eval mode
    (any architecture; timm's ``BatchNormAct2d`` is a ``BatchNorm2d``). The outputs are held until the pass ends, so
    a freed output's address reused by a later tensor is never taken for it."""
    made: dict[int, tuple[nn.Conv2d, torch.Tensor, int]] = {}
    pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d]] = []

    def after_conv(conv, args, out):
        made[id(out)] = (conv, out, out._version)

    def before_norm(norm, args):
        conv, out, version = made.get(id(args[0]), (None, None, None))
        if out is args[0] and out._version == version and norm.running_var is not None:
            pairs.append((conv, norm))

    hooks = [m.register_forward_hook(after_conv) for m in model.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_pre_hook(before_norm) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    modes = [(m, m.training) for m in model.modules()]  # each module's own (a frozen norm stays in eval in training)
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for m, training in modes:
            m.training = training
        for hook in hooks:
            hook.remove()
    return pairs


def cannot_round(model: nn.Module, input_size: int) -> str | None:
    """Why ``model``'s weights cannot be stored for bf16 as the module docstring describes, or None."""
    names = {id(m): name for name, m in model.named_modules()}
    standardised = [name for name, m in model.named_modules() if "StdConv" in type(m).__name__]
    if standardised:
        return (f"{len(standardised)} convolutions ({standardised[0]}, ...) standardise their weights as they run "
                f"({type(dict(model.named_modules())[standardised[0]]).__name__}), so the weights computed with are not the stored ones")
    seen: dict[int, str] = {}
    for conv, norm in conv_norm_pairs(model, _example(model, input_size)):
        if id(conv) in seen:
            return f"convolution {names[id(conv)]} feeds two batch norms ({seen[id(conv)]}, {names[id(norm)]}): no single set of weights folds into both"
        seen[id(conv)] = names[id(norm)]
    return None


def round_weights_to_bf16(model: nn.Module, input_size: int) -> int:
    """Round ``model``'s convolution and linear weights in place as the module docstring describes. Returns how many
    convolutions were rounded as folded into their batch norm.

    Raises:
        ValueError: :func:`cannot_round` names a reason.
    """
    if reason := cannot_round(model, input_size):
        raise ValueError(reason)
    pairs = conv_norm_pairs(model, _example(model, input_size))
    folded = {id(conv) for conv, _ in pairs}
    with torch.no_grad():
        for conv, norm in pairs:
            gamma = norm.weight if norm.affine else torch.ones_like(norm.running_var)
            scale = (gamma / torch.sqrt(norm.running_var + norm.eps)).view(-1, *([1] * (conv.weight.dim() - 1)))
            safe = torch.where(scale == 0, torch.ones_like(scale), scale)  # a zero scale silences its channel
            conv.weight.copy_(torch.where(scale == 0, to_bf16(conv.weight), to_bf16(conv.weight * safe) / safe))
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and id(m) not in folded:
                m.weight.copy_(to_bf16(m.weight))
    return len(pairs)


@contextmanager
def rounded_in_place(model: nn.Module, input_size: int, enabled: bool = True) -> Iterator[nn.Module]:
    """``model`` with its weights rounded (:func:`round_weights_to_bf16`) while open, its own weights back after it
    closes, exactly (kept on the host: no second copy of the network on its device)."""
    if not enabled:
        yield model
        return
    kept = {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters()}
    round_weights_to_bf16(model, input_size)
    try:
        yield model
    finally:
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(kept[name])
