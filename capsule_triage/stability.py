"""Stability training (Zheng et al., CVPR 2016): the loss, and the copies of a batch it compares.

Each training frame goes through the network twice in one forward pass (the batch, then its copy): the loss adds
``W x KL(p(frame) || p(copy))`` to the classification loss. The copy is either

* ``noise``: the frame with Gaussian pixel noise (``augment.pixel_noise``), so that scores do not hang on a grey
  level (a decoder's rounding, a re-encode);
* ``bf16``: the same frame, but with the input of every convolution and linear layer rounded to bf16 in the copy's
  half of the batch (:func:`bf16_copies`; the rounding passes gradients straight through), so that the network's
  fp32 and bf16 scores agree and a bf16 backend can pass ``triage optimize``'s check. With weights stored at bf16
  precision (``--weights-precision bf16``, :mod:`capsule_triage.bf16_weights`) this approximates a graph backend's
  bf16 (OpenVINO's): bf16 weights and layer inputs, fp32 sums (other operations, e.g. additions, stay fp32 here).
  ``--stability-sigma`` applies to the noise copy only.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from .bf16_weights import to_bf16

__all__ = ["COPIES", "bf16_copies", "stability_loss"]

COPIES = ("noise", "bf16")


def stability_loss(logits: torch.Tensor, copy_logits: torch.Tensor) -> torch.Tensor:
    """KL(p(x) || p(x')) over the batch, x' a copy of x (noisy, or computed in bf16).

    The shipped model, trained without it, moves its score by up to 0.08 under Gaussian pixel noise of
    0.5 grey levels and by 0.26-0.30 under 1 level (wcebleedgen/test, benchmarks/fragility.py): as far
    as bf16 or int8 inference moves it, so precision checks fail and small decoder differences move events.
    """
    log_p = torch.log_softmax(logits.float(), dim=1)
    return nn.functional.kl_div(torch.log_softmax(copy_logits.float(), dim=1), log_p, log_target=True, reduction="batchmean")


def _round_second_half(module: nn.Module, args: tuple) -> tuple:
    x = args[0]
    half = x.shape[0] // 2
    copy = x[half:]
    return (torch.cat([x[:half], copy + (to_bf16(copy) - copy).detach()]), *args[1:])


@contextmanager
def bf16_copies(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """While open, every convolution and linear layer of ``model`` rounds the inputs of the second half of each
    batch to bf16 (straight-through: gradients pass as if unrounded). The batch must hold the frames and then their
    copies, as many of each (stability training's batches do; a batch of one frame would be rounded whole)."""
    hooks = [m.register_forward_pre_hook(_round_second_half) for m in model.modules()
             if enabled and isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()
