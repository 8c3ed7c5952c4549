"""The model's own description: architecture, classes, and the preprocessing its weights expect.

Preprocessing is data attached to the weights (as timm's ``PretrainedCfg``): input size, mean/std,
interpolation and the border handling travel in ``config.json`` beside ``model.safetensors`` and are
never hard-coded elsewhere.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Iterable

from .json_files import read_json
from .errors import WeightsError

BORDER_MODES = ("circle", "fov", "none")
CONFIG_VERSION = 1
CONFIG_NAME = "config.json"  # a weights folder = CONFIG_NAME + WEIGHTS_NAME (+ what `triage optimize` adds)
WEIGHTS_NAME = "model.safetensors"
CHECKPOINT_DIR = "checkpoint"  # a training run's state for --resume, inside its weights folder
LITE0_ARCH = "tf_efficientnet_lite0"  # the default model's architecture, the one `--init imagenet` serves


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_names(v) -> bool:
    return isinstance(v, list) and all(isinstance(c, str) for c in v)


def _is_triple(v) -> bool:
    return isinstance(v, (list, tuple)) and len(v) == 3 and all(_is_number(c) for c in v)


# What config.json (and a preset's [model]) may hold per field, and how to say it: checked before
# anything compares or converts a value (a string threshold or input size failed deep in validation or in torch).
FIELD_TYPES = {"architecture": (lambda v: isinstance(v, str), "a string"), "class_names": (_is_names, "a list of strings"),
               "abnormal_classes": (_is_names, "a list of strings"),
               "input_size": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
               "mean": (_is_triple, "a list of 3 numbers"), "std": (_is_triple, "a list of 3 numbers"),
               "interpolation": (lambda v: isinstance(v, str), "a string"), "border": (lambda v: isinstance(v, str), "a string"),
               "border_radius": (_is_number, "a number"), "threshold": (_is_number, "a number"),
               "name": (lambda v: isinstance(v, str), "a string"), "provenance": (lambda v: isinstance(v, dict), "a JSON object")}


@dataclass
class ModelConfig:
    """Everything needed to rebuild a classifier and feed it correctly.

    Attributes:
        architecture: timm model name (e.g. "resnet50", "resnetv2_101x3_bit", "tf_efficientnet_lite0").
        class_names: output classes in head order.
        abnormal_classes: the classes whose probability mass is the suspicion score.
        input_size: square input side in pixels.
        mean: per-channel mean on the 0-1 pixel scale (RGB).
        std: per-channel std on the 0-1 pixel scale (RGB).
        interpolation: resize filter ("bilinear" or "bicubic") of a field-of-view crop (border "fov"); other frames come
            resized by the decoder (an area filter).
        border: how frames are made border-neutral: "circle" (fixed centred circular mask),
            "fov" (crop to the detected field of view, then the circular mask) or "none".
        border_radius: radius of the circular mask as a fraction of half the input side.
        threshold: operating threshold on the suspicion score (chosen on validation data).
        name: short model name for reports.
        provenance: free-form facts on where the weights come from (data, command, licence).
    """

    architecture: str
    class_names: list[str]
    abnormal_classes: list[str]
    input_size: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"
    border: str = "circle"
    border_radius: float = 0.89
    threshold: float = 0.5
    name: str = ""
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.class_names = [str(c) for c in self.class_names]
        self.abnormal_classes = [str(c) for c in self.abnormal_classes]
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)

    def validate(self, where: str | Path = "config.json") -> None:
        """Raise :class:`WeightsError` naming the first inconsistent field."""
        if len(self.class_names) < 2:
            raise WeightsError(where, f"class_names needs at least 2 classes, got {self.class_names}")
        if len(set(self.class_names)) != len(self.class_names):
            raise WeightsError(where, f"class_names has duplicates: {self.class_names}")
        unknown = [c for c in self.abnormal_classes if c not in self.class_names]
        if unknown or not self.abnormal_classes:
            raise WeightsError(where, f"abnormal_classes {self.abnormal_classes} must be a non-empty subset of class_names {self.class_names}")
        if set(self.abnormal_classes) == set(self.class_names):  # QA 56 #1: trained an epoch, then a StopIteration traceback
            raise WeightsError(where, f"abnormal_classes {self.abnormal_classes} name every class: the suspicion score, their summed "
                                      "probability, would be 1 for every frame; leave at least one class normal")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise WeightsError(where, f"mean and std need 3 values with std > 0, got mean={self.mean} std={self.std}")
        if not all(0 <= m <= 1 for m in self.mean) or not all(s <= 1 for s in self.std):  # NaN and inf fail too
            raise WeightsError(where, f"mean and std are on the 0-1 pixel scale (ImageNet: mean [0.485, 0.456, 0.406], std "
                                      f"[0.229, 0.224, 0.225]; mean in [0, 1], std in (0, 1]), got mean={list(self.mean)} std={list(self.std)}")
        if self.border not in BORDER_MODES:
            raise WeightsError(where, f"border must be one of {BORDER_MODES}, got {self.border!r}")
        if not 0 < self.border_radius <= 1.5:
            raise WeightsError(where, f"border_radius must be in (0, 1.5], got {self.border_radius}")
        if not 16 <= self.input_size <= 1024:
            raise WeightsError(where, f"input_size must be in [16, 1024], got {self.input_size}")
        if self.interpolation not in ("bilinear", "bicubic"):
            raise WeightsError(where, f"interpolation must be 'bilinear' or 'bicubic', got {self.interpolation!r}")
        if not 0 <= self.threshold <= 1:
            raise WeightsError(where, f"threshold must be in [0, 1], got {self.threshold}")

    @property
    def abnormal_indices(self) -> list[int]:
        return [self.class_names.index(c) for c in self.abnormal_classes]

    def to_dict(self) -> dict:
        data = asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return {"config_version": CONFIG_VERSION, **data}

    @classmethod
    def from_dict(cls, data: dict, where: str | Path = "config.json") -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        version = data.get("config_version", CONFIG_VERSION)  # files written before it existed have none
        if isinstance(version, float) and version.is_integer():
            version = int(version)  # 1.0: JSON written by a tool that keeps every number a float is version 1
        if version != CONFIG_VERSION or isinstance(version, bool) or not isinstance(version, int):
            newer = isinstance(version, int) and not isinstance(version, bool) and version > CONFIG_VERSION
            raise WeightsError(where, f"config_version {version!r}: " + ("written by a newer capsule-triage; update it to read "
                                      "these weights" if newer else f"this capsule-triage reads config_version {CONFIG_VERSION}"))
        data = {k: v for k, v in data.items() if k != "config_version"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise WeightsError(where, f"unknown config field(s) {unknown}; known: {sorted(known)}")
        missing = [k for k in ("architecture", "class_names", "abnormal_classes") if k not in data]
        if missing:
            raise WeightsError(where, f"missing config field(s) {missing}")
        for key, value in data.items():
            is_valid, kind = FIELD_TYPES[key]
            if not is_valid(value):
                raise WeightsError(where, f"{key} must be {kind}, got {value!r}")
        try:
            config = cls(**data)
        except (TypeError, ValueError) as exc:
            raise WeightsError(where, f"malformed config ({exc})") from None
        config.validate(where)
        return config

    @classmethod
    def load(cls, path: str | Path) -> "ModelConfig":
        path = Path(path)
        try:
            data = read_json(path)
        except FileNotFoundError:
            if (path.parent / CHECKPOINT_DIR).is_dir():  # QA 118 #3: a run stopped before its first epoch: "not found"
                raise WeightsError(path.parent, f"a training run stopped (or still running) before its first epoch ended: no "
                                                f"weights yet (only its {CHECKPOINT_DIR}/); continue it with the same `triage train` "
                                                "command and --resume") from None
            raise WeightsError(path, "config.json not found") from None
        except (OSError, ValueError) as exc:
            raise WeightsError(path, f"not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise WeightsError(path, "config.json must hold a JSON object")
        return cls.from_dict(data, path)

    def save(self, path: str | Path) -> None:
        """Write config.json whole or not at all (QA 112 #9: a kill while a finished run or a new threshold rewrote it in
        place left a weights folder whose config.json no longer parsed)."""
        target = Path(path)  # a link is replaced by the file, never written through (rev104 #10: a Hugging Face cache's
        partial = target.with_name(f".{target.name}.partial-{os.getpid()}")  # config.json links to a blob other revisions share)
        try:
            partial.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
            if target.exists():
                shutil.copymode(target, partial)  # rev103 #11: its mode kept
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)


def read_geometry(input_size: int, border: str) -> tuple[int, bool]:
    """(short side, square crop) at which frames and stills are read for a model: its input size,
    centre-cropped square; with a detected field of view (border "fov") twice its input size with
    the picture's shape kept, so the crop the preprocessor finds still has enough pixels. One rule
    for triage run, triage optimize's check frames and the stills of training and evaluation."""
    return (input_size * 2, False) if border == "fov" else (input_size, True)


WIDE_ASPECT = 1.5  # 3:2 and wider (16:9 gastroscope towers); 4:3 and square capsule exports are left alone


def wide_frames_note(config: ModelConfig, width: int, height: int) -> str | None:
    """A warning when a model that masks the centred square (border "circle", made for capsule frames)
    meets wide frames: whatever lies off centre is never seen (QA 26: 16:9 gastroscope video under the
    default preset flagged 62-79% of normal frames without a word), or None."""
    short, long = sorted((width, height))
    if config.border != "circle" or not short or long / short < WIDE_ASPECT:
        return None
    return (f"frames of {width}x{height}: this model (border 'circle', made for capsule frames) scores only the centred "
            f"{short}x{short} square masked to a circle, so a view off centre is cut; for gastroscope video use a preset "
            "with border 'fov' (gastric-3class-resnet50, gastric-ebc-bit-r101x3: their weights are not shipped; each preset "
            "names the `triage train` command that makes them, or give --weights)")  # QA 92 #5: advice that could not be followed


SMALL_FRAME_ENLARGEMENT = 2  # frames enlarged more than this to the model's input are named (a capsule frame of 256 px to 336 px: 1.3x)


def small_frames_note(config: ModelConfig, width: int, height: int, image: str | None = None) -> str | None:
    """A warning when frames are so small that reading them at the model's input size enlarges them
    more than :data:`SMALL_FRAME_ENLARGEMENT` times (QA 48: a 16 x 16 video was enlarged 14x and scored
    without a word: a preview or thumbnail export, not the recording), or None. ``image``: the name of a
    frame folder's smallest image, whose size is given (its images may differ in size: rev43)."""
    return enlarged_note(config.input_size, width, height, image)


def enlarged_note(input_size: int, width: int, height: int, image: str | None = None, *,
                  advice: str = "score the original recording, not a preview or thumbnail export") -> str | None:
    """:func:`small_frames_note` for a model input of ``input_size`` (labelled stills: :func:`~capsule_triage.stills.load_images`)."""
    short = min(width, height)
    if not short or input_size <= SMALL_FRAME_ENLARGEMENT * short:
        return None
    these = f"images as small as {width}x{height} ({image})" if image else f"frames of {width}x{height}"
    each = "such an image" if image else "each frame"
    return (f"{these}: this model reads {input_size}x{input_size}, so {each} is enlarged "
            f"{input_size / short:.3g}x and scored on detail it does not hold; {advice}")


def unfinished_training(config: ModelConfig) -> str | None:
    """A warning when the weights are the best epoch so far of a training run that was stopped (the
    folder holds them from the first epoch on); None for finished or shipped weights."""
    training = config.provenance.get("training") if isinstance(config.provenance, dict) else None
    if not isinstance(training, dict) or training.get("finished") is not False:
        return None
    best = training.get("best") if isinstance(training.get("best"), dict) else {}
    return (f"these weights are the best epoch so far (epoch {best.get('epoch', '?')}) of a training run that was stopped; "
            "continue it with the same `triage train` command and --resume")


PRESET_CHECKED = ("class_names", "border", "border_radius", "abnormal_classes")  # what a weights folder changes of its preset, said in a warning


def _differs(config: ModelConfig, preset: ModelConfig, name: str) -> bool:
    """Whether a weights folder's config and its preset's model differ in field ``name``, as the scores would."""
    mine, theirs = getattr(config, name), getattr(preset, name)
    if name == "abnormal_classes":
        return set(mine) != set(theirs)  # the suspicion score sums them: order does not matter
    if name == "border_radius" and config.border == preset.border == "none":
        return False  # no mask: its radius is not used
    if isinstance(mine, (int, float)) and not isinstance(mine, bool):  # an int where JSON wrote 1 for 1.0
        mine, theirs = (mine,), (theirs,)
    if isinstance(mine, tuple):  # border_radius, threshold, mean, std: as written in TOML and JSON, not to the last bit
        return not all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(mine, theirs, strict=True))
    return mine != theirs


def preset_differences(config: ModelConfig, preset: ModelConfig | None) -> str | None:
    """One line naming what a weights folder's config changes of the preset's model (QA 16: weights
    trained with the default circle border and abnormal classes ran under a field-of-view preset
    without a word, flagging every frame as chronic gastritis), or None."""
    changed = [name for name in PRESET_CHECKED if preset is not None and _differs(config, preset, name)]
    if not changed:
        return None
    return ("the weights were trained with " + ", ".join(f"{name} {getattr(config, name)!r}" for name in changed) + "; the preset says "
            + ", ".join(f"{name} {getattr(preset, name)!r}" for name in changed) + ": frames are read and scored as the weights were trained")


SCORING_SETTINGS = ("architecture", "input_size", "mean", "std", "interpolation", "threshold")  # a weights folder's own


def unused_preset_settings(config: ModelConfig, preset: ModelConfig, keys: Iterable[str],
                           written: Iterable[str] | None = None) -> str | None:
    """One line naming the ``[model]`` settings a preset set (``keys``) that its own weights folder's config.json
    overrides, or None (QA 93 #1: a hospital's preset with ``threshold = 0.3`` beside its weights ran at their 0.42
    without a word). The folder's config wins, as it describes how the weights were trained and chosen. ``written``: the
    keys config.json holds (rev91 #7: one it lacks was quoted as what it "says", the default taken in its place)."""
    changed = [name for name in SCORING_SETTINGS if name in keys and _differs(config, preset, name)]
    if not changed:
        return None
    written = set(config.to_dict() if written is None else written)
    told = ", ".join(f"{name} {_shown(getattr(preset, name))}" for name in changed)
    says = ", ".join(f"{name} {_shown(getattr(config, name))}" for name in changed if name in written)
    absent = [name for name in changed if name not in written]
    lacks = (f"names no {_listed(absent, 'or')} (its default{'s' if len(absent) > 1 else ''} "
             f"{_listed([_shown(getattr(config, name)) for name in absent], 'and')} {'are' if len(absent) > 1 else 'is'} taken)"
             if absent else "")
    used = " and ".join(part for part in (f"says {says}" if says else "", lacks) if part)
    how = ("; [rank] enter_threshold or --threshold set the operating point" if "threshold" in changed else "")
    verb = "is" if len(changed) == 1 else "are"
    silent = ", and by its defaults where it is silent" if absent else ""
    return (f"the preset's [model] {told} {verb} not used: its weights folder's config.json {used} (a weights folder is "
            f"read and scored as its config.json says{silent}{how})")


def _listed(items: list[str], last: str) -> str:
    """``a``, ``a or b``, ``a, b or c`` (rev95 #4: four absent keys read "no a (...) and no b (...) and no c ...")."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {last} {items[-1]}"


def _shown(value) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(f"{v:g}" for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else repr(value)


def order_hint(weights_classes: list[str], preset_classes: list[str]) -> str:
    """For the same classes in another order (QA 25: training without --classes sorts them): how to fix it."""
    if sorted(weights_classes) != sorted(preset_classes):
        return ""
    return (f": the same classes in another order, and the head's order must be the preset's (train with --classes "
            f"{','.join(preset_classes)}, or give a preset file of your own in the weights' order)")


def folder_config(folder: Path, base_config: ModelConfig | None = None) -> ModelConfig:
    """The config of a weights folder, checked against the preset's classes (no tensors are read). Weights of classes no
    shipped preset has (a group's own labels: QA 65 #1, `triage train` wrote them and `triage run --weights` refused them)
    run as they were trained, their own classes and abnormal ones, under the preset's reading and event settings
    (:func:`preset_differences` says so in a warning).

    Raises:
        WeightsError: no valid config.json, no model.safetensors beside it, or classes that differ from the preset's
            where a shipped preset has them (it is named), or that are the preset's in another order.
    """
    config = ModelConfig.load(folder / CONFIG_NAME)
    if base_config is not None and base_config.class_names != config.class_names:
        from .presets import load_pipeline, presets_hint, presets_with  # presets reads model configs: imported here, not at the top

        hint = order_hint(config.class_names, base_config.class_names)
        if hint or presets_with(config.class_names, any_order=True):  # rev60 #4: a shipped preset's classes in another order too
            if not hint and not presets_with(config.class_names):
                named = presets_with(config.class_names, any_order=True)
                theirs = load_pipeline(named[0]).model.class_names
                hint = (f"; preset {named[0]} has these classes in the order {theirs}, and the head's order must be the preset's "
                        f"(train with --classes {','.join(theirs)}, or give a preset file of your own in the weights' order)")
            raise WeightsError(folder, f"weights classes {config.class_names} do not match the preset's {base_config.class_names}"
                                       + (hint or presets_hint(config.class_names)))
    if not (folder / WEIGHTS_NAME).exists():
        raise WeightsError(folder, f"{WEIGHTS_NAME} not found beside config.json")
    return config
