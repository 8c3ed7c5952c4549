"""Weights stored at bf16 precision (bf16_weights.py) and the bf16 copy of stability training (stability.py)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import timm
import torch
from onnx import numpy_helper
from torch import nn

from capsule_triage.bf16_weights import cannot_round, conv_norm_pairs, round_weights_to_bf16, rounded_in_place, to_bf16
from capsule_triage.model_config import ModelConfig
from capsule_triage.stability import bf16_copies
from capsule_triage.torch_backend import export_onnx
from capsule_triage.weights import create_model


def _off_bf16(w: np.ndarray) -> np.ndarray:
    """Which values are further than two fp32 steps from the nearest bf16 value (a product computed again in fp32,
    as the ONNX export folds a batch norm into its convolution, may be a step off; rounding to bf16 removes that)."""
    w = w.astype(np.float32)
    nearest = to_bf16(torch.from_numpy(w.copy())).numpy()
    return np.abs(w - nearest) > 2 * np.spacing(np.abs(nearest))


def _with_trained_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Batch norms with statistics and scales unlike their initial 0 / 1 (so that folding them changes weights)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.weight.copy_(1 + 0.5 * torch.randn(m.num_features, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=g))
    return model.eval()


def _onnx_weights(path) -> dict[str, np.ndarray]:
    """Each Conv / Gemm node's weight tensor in an exported graph (an initializer or a Constant node)."""
    graph = onnx.load(str(path)).graph
    tensors = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    tensors.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node if n.op_type == "Constant"})
    return {n.name: tensors[n.input[1]] for n in graph.node if n.op_type in ("Conv", "Gemm")}


def test_the_exported_graph_holds_bf16_weights_after_rounding(tmp_path):
    """What a bf16 backend multiplies with are the ONNX graph's folded weights: after rounding, rounding them to bf16
    again changes nothing, so fp32 and bf16 backends compute with the same network."""
    torch.manual_seed(0)
    config = ModelConfig(architecture="test_efficientnet", class_names=["normal", "lesion"], abnormal_classes=["lesion"], input_size=48)
    model = _with_trained_norms(create_model(config))
    before = _onnx_weights(export_onnx(model, config, tmp_path / "before.onnx"))
    assert sum(_off_bf16(w).any() for w in before.values()) == len(before)  # every layer's weights had more than bf16's 8 bits
    x = torch.rand(2, 3, 48, 48)
    with torch.no_grad():
        logits = model(x)
    n_norms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert round_weights_to_bf16(model, config.input_size) == n_norms  # every batch norm of this network follows a convolution
    after = _onnx_weights(export_onnx(model, config, tmp_path / "after.onnx"))
    assert after.keys() == before.keys()
    assert {name: int(_off_bf16(w).sum()) for name, w in after.items()} == {name: 0 for name in after}
    with torch.no_grad():  # a new model, but near the old one: each weight moved by at most 2^-8 of itself
        assert 0 < float((model(x) - logits).abs().max()) < 0.05 * float(logits.abs().max())


def test_a_convolution_without_a_norm_a_linear_layer_and_a_silent_channel_are_rounded_as_such():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 1, bias=False), nn.BatchNorm2d(4),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    _with_trained_norms(model)
    with torch.no_grad():
        model[3].weight[2] = 0.0  # a channel the norm silences: its convolution weights are only rounded
    raw = [model[0].weight.clone(), model[2].weight.clone(), model[6].weight.clone()]
    assert [(type(c).__name__, type(n).__name__) for c, n in conv_norm_pairs(model, torch.zeros(1, 3, 8, 8))] == [("Conv2d", "BatchNorm2d")]
    assert round_weights_to_bf16(model, 8) == 1
    assert torch.equal(model[0].weight, to_bf16(raw[0])) and torch.equal(model[6].weight, to_bf16(raw[2]))
    scale = (model[3].weight / torch.sqrt(model[3].running_var + model[3].eps)).detach().view(-1, 1, 1, 1)
    assert not _off_bf16((model[2].weight * scale).detach().numpy()).any()
    assert torch.equal(model[2].weight[2], to_bf16(raw[1][2]))
    assert not torch.equal(model[2].weight[0], to_bf16(raw[1][0]))  # folded, then rounded: not the raw weights rounded


def test_only_a_norm_reading_a_convolutions_own_unchanged_output_is_paired_with_it():
    """rev67 #1: outputs were matched by id() alone, and a freed output's address reused by a later tensor paired a
    norm with a convolution it never read (resnetv2_50: 16 false pairs of 48, then a false "feeds two norms")."""
    pooled = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.BatchNorm2d(4))
    assert all(conv_norm_pairs(pooled, torch.rand(1, 3, 16, 16)) == [] for _ in range(20))
    in_place = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.BatchNorm2d(4))  # changed after the convolution
    assert conv_norm_pairs(in_place, torch.rand(1, 3, 8, 8)) == []
    batch_statistics = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False))  # nothing to fold
    assert conv_norm_pairs(batch_statistics, torch.rand(1, 3, 8, 8)) == []
    raw = batch_statistics[0].weight.clone()
    assert round_weights_to_bf16(batch_statistics, 8) == 0 and torch.equal(batch_statistics[0].weight, to_bf16(raw))
    preact = timm.create_model("resnetv2_50", num_classes=2)  # pre-activation: a block's first norm reads the sum, not a convolution
    names = {id(m): name for name, m in preact.named_modules()}
    pairs = [(names[id(c)], names[id(n)]) for c, n in conv_norm_pairs(preact, torch.zeros(1, 3, 32, 32))]
    assert len(pairs) == 32 and all(n == c.replace("conv1", "norm2").replace("conv2", "norm3") for c, n in pairs), pairs[:4]
    assert cannot_round(preact, 32) is None
    frozen = _with_trained_norms(nn.Sequential(nn.Conv2d(3, 2, 1), nn.BatchNorm2d(2))).train()
    frozen[1].eval()  # a locked block's norm keeps its statistics in training (transfer.train_mode)
    conv_norm_pairs(frozen, torch.rand(1, 3, 4, 4))
    assert frozen.training and frozen[0].training and not frozen[1].training


def test_weights_that_cannot_be_stored_for_bf16_are_named():
    class Fork(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.a, self.b = nn.Conv2d(3, 2, 1), nn.BatchNorm2d(2), nn.BatchNorm2d(2)

        def forward(self, x):
            y = self.conv(x)
            return self.a(y) + self.b(y)

    said = "convolution conv feeds two batch norms (a, b): no single set of weights folds into both"
    assert cannot_round(_with_trained_norms(Fork()), 4) == said
    with pytest.raises(ValueError, match=r"convolution conv feeds two batch norms \(a, b\)"):
        round_weights_to_bf16(Fork(), 4)
    bit = timm.create_model("resnetv2_50x1_bit", num_classes=2)  # BiT: weight-standardised convolutions (rev67 #5)
    assert cannot_round(bit, 32) == ("53 convolutions (stem.conv, ...) standardise their weights as they run (StdConv2d), "
                                     "so the weights computed with are not the stored ones")


def test_weights_rounded_in_place_come_back_exactly():
    torch.manual_seed(3)
    model = _with_trained_norms(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with rounded_in_place(model, 8) as rounded:
        assert rounded is model and not torch.equal(model[3].weight, before["3.weight"]) and torch.equal(model[3].weight, to_bf16(before["3.weight"]))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()) and model.training
    with pytest.raises(RuntimeError, match="inside"), rounded_in_place(model, 8):
        raise RuntimeError("inside")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with rounded_in_place(model, 8, enabled=False):
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_bf16_copies_round_every_layer_input_of_the_second_half_only_and_pass_gradients_straight_through():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)).eval()
    x = torch.rand(3, 3, 8, 8) * 3
    batch = torch.cat([x, x]).requires_grad_(True)
    with bf16_copies(model):
        out = model(batch)
    with torch.no_grad():
        plain = model(x)
        hidden = model[2](model[1](model[0](to_bf16(x))))
        by_hand = model[3](to_bf16(hidden))  # each layer's input rounded, its arithmetic fp32
    assert torch.equal(out[:3].detach(), plain)
    assert torch.allclose(out[3:].detach(), by_hand, atol=1e-6) and not torch.allclose(out[3:].detach(), plain, atol=1e-4)
    out[3:].sum().backward()
    assert batch.grad[:3].abs().sum() == 0 and batch.grad[3:].abs().sum() > 0
    with torch.no_grad():  # the hooks are gone once the block closes
        assert torch.equal(model(torch.cat([x, x]))[3:], plain)
    with bf16_copies(model, enabled=False), torch.no_grad():
        assert torch.equal(model(torch.cat([x, x]))[3:], plain)
