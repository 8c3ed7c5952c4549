"""Build timm models and load their weights safely.

Accepted weights:
* a folder with ``config.json`` + ``model.safetensors`` (what ``triage train`` writes);
* a ``.safetensors`` file or a ``.pth``/``.pt``/``.bin`` state dict (read with
  ``torch.load(weights_only=True)``: pickled code is refused, never run) plus a ModelConfig from the
  pipeline preset;
* BiT's original ``.npz`` checkpoints (``np.load(allow_pickle=False)``, mapped by timm's loader);
* ``hf-hub:OWNER/REPO[@REVISION]``: a weights folder published on the Hugging Face Hub (:mod:`.hub`).
  A timm tag (``hub:resnet50.a1_in1k``, ImageNet weights without our head) only starts training
  (:func:`capsule_triage.transfer.initial_model`).
"""

from __future__ import annotations

import difflib
import os
import pickle
import shlex
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import timm
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .errors import OutputError, WeightsError, unexpanded_note
from .hub import first_line, local_weights
from .model_config import CONFIG_NAME, WEIGHTS_NAME, ModelConfig, folder_config
from .presets import fitting_presets_hint
STATE_DICT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


def create_model(config: ModelConfig, *, pretrained_file: str | None = None) -> torch.nn.Module:
    """A timm model of ``config.architecture`` with a head for ``config.class_names``.

    Raises:
        WeightsError: the architecture is not a timm model.
    """
    arch = config.architecture
    if not timm.is_model(arch):
        # QA 68 #10: "similar: []" when none; QA 93 #6: a typo ("resnet181") matched no "*resnet181*": the closest names first
        close = list(dict.fromkeys([*difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.8),
                                    *timm.list_models(f"*{arch.split('_')[0]}*")]))[:8]
        raise WeightsError(arch, "unknown architecture (not a timm model), named by the preset's [model] architecture or the "
                                 "weights' config.json" + (f"; similar: {', '.join(close)}" if close else ""))
    kwargs: dict = {"num_classes": len(config.class_names)}
    if pretrained_file is not None:
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": pretrained_file})
    kwargs.update(sized_for(config, arch))
    try:
        model = timm.create_model(arch, **kwargs)
    except TypeError as exc:
        if "img_size" not in kwargs:
            raise
        raise WeightsError(arch, f"takes frames of one size only, not the input_size {config.input_size} of its config "
                                 f"({str(exc).splitlines()[0][:120]})") from None
    except (RuntimeError, OSError, ValueError) as exc:
        raise WeightsError(pretrained_file or arch, f"cannot create {arch}: {str(exc).splitlines()[0][:200]}") from None
    if "img_size" in kwargs:
        _runs_at(arch, kwargs["num_classes"], config.input_size)
    return model


def _runs_at(arch: str, num_classes: int, size: int) -> None:
    """That a fixed-size model built for another size runs a frame of it (rev89 #5: crossvit_tiny_240 takes timm's
    ``img_size`` 160, then failed at its first frames in every study of a night): one forward on the meta device, shapes
    only (no memory; ~0.1 s for a ViT, seconds for the largest), run only for the models :func:`sized_for` resizes."""
    try:
        with torch.device("meta"), torch.no_grad():
            timm.create_model(arch, num_classes=num_classes, img_size=size).eval()(torch.empty(1, 3, size, size))
    except (RuntimeError, ValueError, AssertionError, TypeError) as exc:
        raise WeightsError(arch, f"cannot run frames of the input_size {size} of its config, though built for it "
                                 f"({first_line(exc, 160)}); its own size is {_own_size(arch)}") from None


def _own_size(arch: str) -> str:
    cfg = timm.models.get_pretrained_cfg(arch)
    return "x".join(map(str, cfg.input_size[-2:])) + " px" if cfg is not None else "unknown"


def sized_for(config: ModelConfig, name: str) -> dict:
    """``timm.create_model`` arguments that build a model of a fixed input size (a ViT's, a Swin's) for ``config``'s:
    ``img_size`` where the model's own differs, else none (QA 93 #3: a ViT of 224 px under input_size 160 loaded, then
    failed at its first frames with a 269-line traceback; built for the config's size, its position embeddings are of
    that size, and timm resamples pretrained ones as it loads them)."""
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not cfg.fixed_input_size or tuple(cfg.input_size[-2:]) == (config.input_size,) * 2:
        return {}
    return {"img_size": config.input_size}


def read_state_dict(path: str | Path, *, mapped: bool = False) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file or a plain state dict; pickled objects are refused.

    ``mapped``: a zip-format .pth's tensors stay in the file until used (its memory map), for :func:`read_shapes`.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(path, "weights file not found")
    if path.suffix == ".safetensors":
        try:  # a DataParallel model's names as a .pth's are read (QA 93 #11: its "module." prefix was 122 missing tensors)
            return {k.removeprefix("module."): v for k, v in load_file(str(path), device="cpu").items()}
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(path, f"not a valid safetensors file ({str(exc)[:160]})") from None
    if path.suffix in STATE_DICT_SUFFIXES:
        try:
            with warnings.catch_warnings():  # torch warns on stderr about refused pickles: our error says it in one line
                warnings.simplefilter("ignore")
                try:
                    data = torch.load(str(path), map_location="cpu", weights_only=True, mmap=mapped)
                except RuntimeError:
                    if not mapped:
                        raise
                    data = torch.load(str(path), map_location="cpu", weights_only=True)  # a legacy (not zip) .pth cannot be mapped
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, TypeError, KeyError, OSError) as exc:
            raise WeightsError(path, f"refused: {_why_not_loaded(path, exc)}") from None
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(data, dict) and isinstance(data.get(key), dict):
                data = data[key]
        if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
            raise WeightsError(path, "not a state dict of tensors")
        return {k.removeprefix("module."): v for k, v in data.items()}
    raise WeightsError(path, f"unsupported weights format {path.suffix!r} (use a weights folder, .safetensors, .pth or BiT .npz)")


def _why_not_loaded(path: Path, exc: BaseException) -> str:
    """What a ``torch.load(weights_only=True)`` failure means, in our words: torch's own text is pages
    long, carries terminal colour codes and suggests loading with ``weights_only=False`` (running code)."""
    with open(path, "rb") as fh:
        head = fh.read(16)
    size = int.from_bytes(head[:8], "little") if len(head) == 16 else 0
    if not head:
        return "an empty file (0 bytes)"
    if 0 < size < 100_000_000 and head[8:9] == b"{":  # an 8-byte header length, then JSON: safetensors
        return "a safetensors file named .pth/.pt; rename it to .safetensors"
    if not (head.startswith(b"PK\x03\x04") or (head[:1] == b"\x80" and head[1:2] in b"\x02\x03\x04\x05")):
        return f"not a PyTorch weights file (it begins with {head[:8]!r}: a web page, text, or another format?)"
    if "unsupported global" in str(exc).lower() or "unsupported operand" in str(exc).lower():
        return ("not a plain tensor state dict: it holds Python objects besides tensors (a training checkpoint with numbers, "
                "arrays or classes), which are never loaded here; save model.state_dict() alone, or as .safetensors")
    return f"a damaged or truncated PyTorch file ({first_line(exc, 160).split('. ')[0]})"


def read_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes of a loose weights file's tensors without reading their numbers (a safetensors file's header, a
    zip-format .pth's memory map; a legacy .pth is read whole). Errors as :func:`read_state_dict`'s."""
    path = Path(path)
    if path.suffix == ".safetensors" and path.is_file():
        try:
            with safe_open(str(path), framework="pt") as f:
                return {k.removeprefix("module."): tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(path, f"not a valid safetensors file ({str(exc)[:160]})") from None
    return {k: tuple(v.shape) for k, v in read_state_dict(path, mapped=True).items()}


def mismatches(own: dict[str, tuple[int, ...]], given: dict[str, tuple[int, ...]]) -> str | None:
    """What keeps tensors of shapes ``given`` from loading into a model of shapes ``own`` (name -> shape): None if nothing."""
    missing = [k for k in own if k not in given]
    unexpected = [k for k in given if k not in own]
    shaped = [f"{k} {given[k]} vs {v}" for k, v in own.items() if k in given and given[k] != v]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing tensor(s) e.g. {missing[0]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s) e.g. {unexpected[0]}")
    if shaped:
        problems.append(f"{len(shaped)} mis-shaped tensor(s) e.g. {shaped[0]} expected")
    return "; ".join(problems) or None


def shapes_of(state_dict: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state_dict.items()}


def meta_model(config: ModelConfig) -> torch.nn.Module:
    """``config``'s model without its numbers (tensors on the meta device: a fraction of a second, no memory), for its shapes."""
    with torch.device("meta"):
        return create_model(config)


def classifier_prefix(model: torch.nn.Module) -> str:
    """The state-dict prefix of the model's classifier head (``fc``, ``head.fc``, ``classifier``)."""
    head = model.get_classifier()
    return next(name for name, module in model.named_modules() if module is head)


def load_into(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], where: str | Path) -> None:
    """Load strictly; a missing, unexpected or mis-shaped tensor is a :class:`WeightsError`."""
    problems = mismatches(shapes_of(model.state_dict()), shapes_of(state_dict))
    if problems:
        raise WeightsError(where, "weights do not match the model: " + problems)
    model.load_state_dict(state_dict, strict=True)


def check_weights_file(path: Path, config: ModelConfig) -> None:
    """That a loose weights file (.safetensors or a state dict; not a BiT .npz) fits ``config``'s model, from its
    tensors' names and shapes alone (rev39: a file of other classes was a shape error naming no way on, and
    ``triage batch`` found it only after making OUT_DIR).

    Raises:
        WeightsError: unreadable, or of another model: naming the model expected, the head's classes where
            only the head differs, and the shipped presets whose model the tensors fit, if any.
    """
    given = read_shapes(path)
    model = meta_model(config)
    own = shapes_of(model.state_dict())
    problems = mismatches(own, given)
    if problems is None:
        return
    head = classifier_prefix(model) + "."
    body_fits = mismatches(*({k: v for k, v in shapes.items() if not k.startswith(head)} for shapes in (own, given))) is None
    outputs = {shape[0] for k, shape in given.items() if k.startswith(head) and shape}  # a Linear's or 1x1 conv's weight and bias
    classes = outputs.pop() if body_fits and len(outputs) == 1 else None
    expected = f"{config.architecture}, {len(config.class_names)} classes: {', '.join(config.class_names)}"
    raise WeightsError(path, f"weights do not match the model ({expected}): "
                             + (f"their head has {classes:,} classes ({problems})" if classes else problems) + fitting_presets_hint(given, classes, path))


def head_classes(model: torch.nn.Module) -> int:
    """Output classes of the head (Linear ``out_features`` or, for ResNet-v2/BiT, 1x1 Conv ``out_channels``)."""
    head = model.get_classifier()
    return int(getattr(head, "out_features", None) or getattr(head, "out_channels", -1))


def load_model(weights: str | Path, base_config: ModelConfig | None = None) -> tuple[torch.nn.Module, ModelConfig]:
    """Build the model and load its weights.

    Args:
        weights: weights folder, file, or ``hf-hub:OWNER/REPO[@REVISION]`` (:mod:`capsule_triage.hub`).
        base_config: the preset's model description, used for bare weight files; a folder's own
            ``config.json`` wins, but its classes must agree with the preset's.

    Raises:
        WeightsError: missing, unsafe or inconsistent weights.
    """
    path = Path(local_weights(weights))
    if path.is_dir():
        config = folder_config(path, base_config)
        model = create_model(config)
        load_into(model, read_state_dict(path / WEIGHTS_NAME), path / WEIGHTS_NAME)
        return model.eval(), config
    if not path.exists():
        raise WeightsError(path, f"weights not found{unexpanded_note(path)}")
    if base_config is None:
        raise WeightsError(path, "a bare weights file needs the model description of a pipeline preset (--pipeline)")
    if path.suffix != ".npz":
        check_weights_file(path, base_config)
    model = create_model(base_config)
    if path.suffix == ".npz":
        load_bit_npz(model, path, fresh_head=False)
    else:
        load_into(model, read_state_dict(path), path)
    return model.eval(), base_config


def load_bit_npz(model: torch.nn.Module, path: str | Path, *, fresh_head: bool = True) -> None:
    """Load one of BiT's original ``.npz`` checkpoints into a timm ResNet-v2 (no pickle).

    Args:
        fresh_head: a checkpoint whose head has another number of classes (BiT-M's 21,843, or none)
            gives the backbone and the model keeps its own new head: how training starts from it.
            False (scoring): such a checkpoint is refused, since a new head scores at random.

    Raises:
        WeightsError: not a BiT checkpoint of this network, or (``fresh_head=False``) its head does not
            fit the model's classes.
    """
    from timm.models.resnetv2 import ResNetV2, _load_weights

    if not isinstance(model, ResNetV2):
        raise WeightsError(path, f"BiT .npz checkpoints fit ResNet-v2 models only, not {type(model).__name__}")
    try:
        with np.load(str(path), allow_pickle=False) as npz:
            if not any(k.startswith("resnet/") for k in npz.files):  # QA 44: any .npz was offered as a BiT checkpoint to train from
                raise WeightsError(path, "not a BiT npz checkpoint (no resnet/ tensors): BiT's .npz files hold the "
                                         "network under resnet/ and its classifier under head/")
            has_head = any(k.endswith("head/conv2d/kernel") for k in npz.files)
            head_shape = npz[next(k for k in npz.files if k.endswith("head/conv2d/kernel"))].shape if has_head else None
        n_classes = head_classes(model)
        if not fresh_head and (head_shape is None or head_shape[-1] != n_classes):
            held = f"a head for {head_shape[-1]:,} classes" if head_shape is not None else "no classifier head"
            raise WeightsError(path, f"the checkpoint has {held}, not for this model's {n_classes} classes (a pretrained BiT "
                                     f"checkpoint): it starts training (`triage train --init {shlex.quote(str(path))}`), it does not score")
        if head_shape is not None and head_shape[-1] != n_classes:
            # Pretrained BiT head (e.g. 21,843 classes): load the backbone, keep our fresh head.
            head = {k: v.clone() for k, v in model.get_classifier().state_dict().items()}
            model.reset_classifier(head_shape[-1])
            _load_weights(model, str(path))
            model.reset_classifier(n_classes)
            model.get_classifier().load_state_dict(head)
        else:
            _load_weights(model, str(path))
    except (OSError, ValueError, KeyError, RuntimeError) as exc:  # KeyError: a tensor is absent; RuntimeError: of another shape
        raise WeightsError(path, f"not a BiT npz checkpoint for this {type(model).__name__} ({first_line(exc, 160)})") from None


def shareable(path: Path) -> None:
    """Give a file the permissions the umask allows (0644 under the usual 022): safetensors writes its
    files 0600, so other users of a shared server could not load a weights folder."""
    mask = os.umask(0)
    os.umask(mask)
    path.chmod(0o666 & ~mask)


def save_weights(folder: str | Path, model: torch.nn.Module, config: ModelConfig) -> Path:
    """Write ``config.json`` + ``model.safetensors`` atomically (a temp folder renamed into place)."""
    folder = Path(folder)
    tmp = None
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        tmp.chmod(0o755)  # mkdtemp makes 0700; a weights folder is meant to be shared
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        # One metadata key: safetensors keeps the metadata in a hash map whose order changes from one save
        # to the next, so two keys gave two different files for the same tensors (and weights_sha256 with
        # them). The architecture is in config.json.
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        shareable(tmp / WEIGHTS_NAME)
        config.save(tmp / CONFIG_NAME)
    except BaseException as exc:  # QA 112 #2/#6: a full disk was a traceback, an interrupt left the staging folder
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, (OSError, SafetensorError)):
            raise OutputError(folder, f"cannot write the weights ({str(exc).strip()[:160]}); free space and run the command "
                                      "again (with --resume if a checkpoint is there)") from None
        raise
    if folder.exists():
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            os.replace(tmp / name, folder / name)
        tmp.rmdir()
    else:
        os.replace(tmp, folder)
    return folder
