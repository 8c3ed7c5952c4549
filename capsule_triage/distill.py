"""Knowledge distillation (Hinton et al., 2015): training toward a teacher model's outputs instead of the labels.

``triage train --distill WEIGHTS`` replaces the classification loss on the labels by ``A x KL(p_teacher || p_model)``
(temperature 1, A = ``--distill-weight``), or with ``--distill-loss logits`` by A x the mean squared error of the
logits' pairwise differences (Ba & Caruana, 2014, regress the logits; centred, as in Hinton et al.'s high-temperature
limit; for two classes, the error of the logit margin whose sigmoid is the score), on
the same augmented, recompressed uint8 frames; each model reads them through its own preprocessing (input size,
normalisation, border), so a BiT teacher at 384 px can teach a Lite0 at 224 px. Only the classes must be the same, in
the same order (:func:`mismatch`), so the teacher is a weights folder, whose config.json names them (a bare weights file
does not). The labels still choose the best epoch (validation); ``--class-weighting`` does not
apply to the teacher's loss, and the log's ``train_loss`` is that loss. The teacher scores in fp32 whatever
``--precision`` the model trains in, in eval mode, without gradients.

Uses: a large teacher distilled into a model fast enough for nightly batches; or a model kept near its own scores
while another loss changes its arithmetic (``--init`` and ``--distill`` the same weights, with ``--stability-copy
bf16``; measured in benchmarks/README.md, "A bf16-consistent model"). There the stability loss rewards flatter scores
(a small logit's rounding moves its score least); the teacher's KL charges little for shrinking a confident margin
(6.9 to 4.6: 0.007), so it barely resists, while the logits' error charges in proportion to the change (5.3). The
logits' error also grows without bound with the error, so a teacher's very confident frames weigh most.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .digests import weights_sha256
from .errors import InputError, WeightsError
from .hub import local_weights
from .model_config import ModelConfig
from .preprocess import Preprocessor
from .weights import load_model

__all__ = ["LOSSES", "Distillation", "load_teacher", "mismatch"]

LOSSES = ("kl", "logits")


def mismatch(teacher: ModelConfig, config: ModelConfig) -> str | None:
    """Why ``teacher``'s probabilities cannot be the targets of a model described by ``config`` (None: they can)."""
    if list(teacher.class_names) != list(config.class_names):
        return f"the teacher's classes {list(teacher.class_names)} are not the model's {list(config.class_names)} (in this order)"
    return None


class Distillation(nn.Module):
    """``weight x`` the ``loss`` (:data:`LOSSES`) between the teacher's and the model's outputs over a batch of uint8
    frames: the teacher reads them through its own preprocessing, in fp32 and eval mode, without gradients."""

    def __init__(self, teacher: nn.Module, preprocess: Preprocessor, weight: float = 1.0, loss: str = "kl"):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.teacher = teacher.eval().requires_grad_(False)
        self.preprocess = preprocess
        self.weight = weight
        self.loss = loss

    def train(self, mode: bool = True) -> "Distillation":  # the teacher always scores as inference does
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, logits: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """``logits``: the model's, of ``frames`` (uint8 [N, 3, H, W], on the teacher's device)."""
        with torch.no_grad(), torch.autocast(frames.device.type, enabled=False):
            x = self.preprocess(frames).contiguous(memory_format=torch.channels_last)
            target = self.teacher(x).float()
        if self.loss == "logits":  # mean over class pairs (i, j) of ((z_i - z_j) - (t_i - t_j))^2 = 2/(K-1) x the centred squared error
            error = logits.float() - target
            centred = error - error.mean(dim=1, keepdim=True)  # a softmax ignores a shift of all logits
            return self.weight * 2.0 / max(error.shape[1] - 1, 1) * centred.pow(2).sum(dim=1).mean()
        log_p = torch.log_softmax(logits.float(), dim=1)
        return self.weight * nn.functional.kl_div(log_p, torch.log_softmax(target, dim=1), log_target=True, reduction="batchmean")


def load_teacher(path: str | Path, config: ModelConfig, device: torch.device, weight: float,
                 saved: dict | None = None, loss: str = "kl") -> tuple[Distillation, dict]:
    """The teacher of ``--distill`` and what the provenance records of it; ``saved``: the checkpoint state of a
    resumed run, whose teacher must be the same weights (by digest: a path may now hold others).

    Raises:
        WeightsError: no such weights, or weights that do not load ("--distill:" said first).
        InputError: a teacher of other classes, or not the teacher the resumed run started with.
    """
    try:
        local = Path(local_weights(path))
        if local.exists() and not local.is_dir():  # QA 75 #1: taken as the student's own description, its classes always "agreed"
            raise WeightsError(local, "a bare weights file states no classes, so whether they are the data's, in the same order, "
                                      "cannot be checked (a teacher of the classes in another order teaches the opposite labels); "
                                      "give the teacher's weights folder (config.json beside model.safetensors, as `triage train` "
                                      "writes it)" + ("; this run began from the file before such files were refused (its "
                                                      "classes never checked): train it again from the beginning, with the "
                                                      "folder" if saved is not None else ""))
        teacher, teacher_config = load_model(local)  # a folder brings its own description
    except WeightsError as exc:
        raise WeightsError(exc.path, f"--distill: {exc.message}") from None
    if reason := mismatch(teacher_config, config):
        raise InputError(path, f"--distill: {reason}; distil from a model of the same classes")
    digest = weights_sha256(local)
    if saved is not None and saved.get("distill_sha256", digest) != digest:
        raise InputError(path, f"--distill: the teacher's weights changed since the checkpoint (SHA-256 {digest[:12]}..., "
                               f"was {saved['distill_sha256'][:12]}...); --resume continues a run only with the teacher it started with")
    record = {"weights": str(path), "weights_sha256": digest, "name": teacher_config.name or teacher_config.architecture,
              "loss": loss}
    teacher = teacher.to(device, memory_format=torch.channels_last)
    return Distillation(teacher, Preprocessor(teacher_config).to(device), weight, loss), record
