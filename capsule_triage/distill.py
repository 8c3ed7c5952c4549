"""Knowledge distillation (Hinton et al., 2015): training toward a teacher model's probabilities instead of the labels.

``triage train --distill WEIGHTS`` replaces the classification loss on the labels by ``A x KL(p_teacher(x) || p(x))``
(temperature 1, A = ``--distill-weight``) on the same augmented, recompressed frames ``x`` the model sees; the labels
still choose the best epoch (validation). The teacher reads the model's own preprocessed input, so it must take the
same input: classes in the same order, input size, normalisation, border and resize filter (:func:`mismatch`).

What it is for here: keeping a model's decisions while another loss changes its arithmetic. With the model starting
from the teacher (``--init`` the same folder) and ``--stability W --stability-copy bf16``, the model learns to give
the teacher's scores in fp32 and in bf16 alike, instead of re-learning the labels (which moved the operating point:
benchmarks/README.md, "A bf16-consistent model"). A larger teacher distilled into a smaller model is the textbook
use and works the same way when both take the same input.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .digests import weights_sha256
from .errors import InputError
from .hub import local_weights
from .model_config import ModelConfig
from .weights import load_model

__all__ = ["SAME_INPUT", "Distillation", "load_teacher", "mismatch"]

# What the teacher and the model must share: the teacher scores the model's own preprocessed frames.
SAME_INPUT = ("class_names", "input_size", "mean", "std", "border", "border_radius", "interpolation")


def mismatch(teacher: ModelConfig, config: ModelConfig) -> str | None:
    """Why ``teacher`` cannot score the input of a model described by ``config`` (None: it can)."""
    differ = [f"{k} {_value(teacher, k)} (the model's: {_value(config, k)})" for k in SAME_INPUT
              if _value(teacher, k) != _value(config, k) and not (k == "border_radius" and teacher.border == config.border == "none")]
    return "the teacher takes another input than the model: " + "; ".join(differ) if differ else None


def _value(config: ModelConfig, key: str):
    value = getattr(config, key)
    return list(value) if isinstance(value, (list, tuple)) else value


class Distillation(nn.Module):
    """``weight x KL(p_teacher(x) || p(x))`` over a batch: the teacher in eval mode, without gradients."""

    def __init__(self, teacher: nn.Module, weight: float = 1.0):
        super().__init__()
        self.teacher = teacher.eval().requires_grad_(False)
        self.weight = weight

    def train(self, mode: bool = True) -> "Distillation":  # the teacher always scores as inference does
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = torch.log_softmax(self.teacher(x).float(), dim=1)
        log_p = torch.log_softmax(logits.float(), dim=1)
        return self.weight * nn.functional.kl_div(log_p, target, log_target=True, reduction="batchmean")


def load_teacher(path: str | Path, config: ModelConfig, device: torch.device, weight: float) -> tuple[Distillation, dict]:
    """The teacher of ``--distill`` and what the provenance records of it.

    Raises:
        WeightsError: no such weights, or weights that do not load.
        InputError: a teacher that takes another input than the model (:func:`mismatch`).
    """
    local = Path(local_weights(path))
    # a folder brings its own description (checked below); a bare weights file is taken as the model's architecture
    teacher, teacher_config = load_model(local, None if local.is_dir() else config)
    if reason := mismatch(teacher_config, config):
        raise InputError(path, f"--distill: {reason}; distil from a model trained on the same input")
    record = {"weights": str(path), "weights_sha256": weights_sha256(local), "name": teacher_config.name or teacher_config.architecture}
    return Distillation(teacher.to(device, memory_format=torch.channels_last), weight), record
