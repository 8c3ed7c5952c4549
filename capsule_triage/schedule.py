"""Learning-rate schedules as pure functions of the step: BiT-HyperRule and plain epochs.

A :class:`Schedule` is plain data (it round-trips through JSON for ``--resume``); ``lr_at(step)``
gives the learning rate of optimisation step ``step`` (0-based).

BiT-HyperRule as adapted by seed B (Laser & Optoelectronics Progress 59(6), 2022): a fixed budget of
training images (256,000 for fewer than 20k labelled images), ``steps = budget / batch``, SGD with
momentum 0.9, initial lr ``0.03 * batch / 512`` (linear scaling rule) divided by 10 at 30%, 60% and
90% of the steps; no MixUp, no resolution change. No warm-up either: seed B names none, where the original BiT rule
warms up linearly over its first 100 of 500 steps (QA 104 #3). The larger-data tiers keep the step
counts of the original BiT rule at batch 512 (10k steps below 500k images, 20k above).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

BIT_BASE_LR = 0.03  # at batch 512
BIT_REFERENCE_BATCH = 512
BIT_DECAY_FRACTIONS = (0.3, 0.6, 0.9)
BIT_TIERS = ((20_000, 256_000), (500_000, 10_000 * 512), (None, 20_000 * 512))  # (below N images, budget)
SGD_MOMENTUM = 0.9
KINDS = ("bit", "cosine", "constant")
STRATEGIES = ("head", "full", "two-stage")


@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule.

    Attributes:
        kind: "bit" (step decay by 10 at ``decay_steps``), "cosine" or "constant".
        total_steps: optimisation steps of the whole schedule.
        base_lr: initial learning rate (after warm-up).
        decay_steps: steps at which a "bit" schedule divides the lr by 10.
        warmup_steps: linear warm-up from 0 over this many steps.
    """

    kind: str
    total_steps: int
    base_lr: float
    decay_steps: tuple[int, ...] = ()
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"schedule kind must be one of {KINDS}, got {self.kind!r}")
        if self.total_steps < 1 or self.base_lr <= 0:
            raise ValueError(f"schedule needs total_steps >= 1 and base_lr > 0, got {self.total_steps}, {self.base_lr}")

    def lr_at(self, step: int) -> float:
        if self.warmup_steps and step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        if self.kind == "bit":
            return self.base_lr * 0.1 ** sum(step >= d for d in self.decay_steps)
        if self.kind == "cosine":
            span = max(self.total_steps - self.warmup_steps, 1)
            return self.base_lr * 0.5 * (1 + math.cos(math.pi * (step - self.warmup_steps) / span))
        return self.base_lr

    def to_dict(self) -> dict:
        return {**asdict(self), "decay_steps": list(self.decay_steps)}

    @classmethod
    def from_dict(cls, data: dict) -> "Schedule":
        return cls(**{**data, "decay_steps": tuple(data.get("decay_steps", ()))})


def bit_budget_images(n_train: int) -> int:
    """Training images seen in total under BiT-HyperRule for a dataset of ``n_train`` labelled images."""
    for below, budget in BIT_TIERS:
        if below is None or n_train < below:
            return budget
    raise AssertionError("unreachable")


def bit_hyperrule(n_train: int, batch_size: int, *, budget_scale: float = 1.0) -> Schedule:
    """BiT-HyperRule for ``batch_size``; ``budget_scale`` < 1 shortens the budget for CPU runs.

    Example: 1,000 images at batch 32 -> 8,000 steps, lr 0.001875, /10 at steps 2,400, 4,800, 7,200.
    """
    if batch_size < 1 or budget_scale <= 0:
        raise ValueError(f"batch_size must be >= 1 and budget_scale > 0, got {batch_size}, {budget_scale}")
    total = max(1, round(bit_budget_images(n_train) * budget_scale / batch_size))
    decays = tuple(round(f * total) for f in BIT_DECAY_FRACTIONS)
    return Schedule("bit", total, BIT_BASE_LR * batch_size / BIT_REFERENCE_BATCH, decays)


def bit_epochs(n_train: int, *, budget_scale: float = 1.0) -> float:
    """Passes over the training set the BiT budget amounts to (budget / train size)."""
    return bit_budget_images(n_train) * budget_scale / max(n_train, 1)


def epoch_schedule(epochs: int, steps_per_epoch: int, lr: float, *, kind: str = "cosine", warmup_steps: int = 0) -> Schedule:
    """``epochs`` passes of ``steps_per_epoch`` steps, cosine-annealed (or constant) from ``lr``."""
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    return Schedule(kind, epochs * steps_per_epoch, lr, (), warmup_steps)


@dataclass(frozen=True)
class Phase:
    """One stage of a training run.

    Attributes:
        name: "head" (only the classifier trains, on frozen features) or "full".
        lock: logical blocks 1..lock stay frozen in a "full" phase (seed C's lockK).
        schedule: the phase's learning rate per step.
    """

    name: str
    lock: int
    schedule: Schedule


def plan_phases(strategy: str, main: Schedule, *, lock: int = 0, head: Schedule | None = None) -> list[Phase]:
    """``head``: [head on ``main``]; ``full``: [full on ``main``]; ``two-stage`` (seed A): [head on ``head``, full on ``main``]."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if strategy == "head":
        return [Phase("head", 0, main)]
    full = Phase("full", lock, main)
    return [full] if strategy == "full" else [Phase("head", 0, head or main), full]
