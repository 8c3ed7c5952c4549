"""The PyTorch backends (``torch-fp32``, ``torch-bf16``, ``torch-fp16``) and the ONNX export.

:class:`FoldedModel` is the one graph every backend runs: uint8 NHWC frames -> the model's own
normalisation and border mask -> the network -> logits. ONNX Runtime runs the same graph exported
by :func:`export_onnx`.
"""

from __future__ import annotations

import contextlib
import copy
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .backends import Done, split_runs
from .device import exact_fp32, out_of_memory, to_device_nchw
from .errors import DeviceError
from .model_config import ModelConfig
from .preprocess import Preprocessor, fov_boxes


class FoldedModel(nn.Module):
    """uint8 NHWC frames -> logits: preprocessing + network in one graph (exportable to ONNX)."""

    def __init__(self, model: nn.Module, config: ModelConfig):
        super().__init__()
        self.preprocess = Preprocessor(config)
        self.model = model

    def forward(self, frames_nhwc: torch.Tensor, boxes: list[tuple[int, int, int]] | None = None) -> torch.Tensor:
        x = self.preprocess(frames_nhwc.permute(0, 3, 1, 2), boxes)
        return self.model(x.contiguous(memory_format=torch.channels_last))


class TorchBackend:
    """PyTorch eager on CPU or CUDA; autocast for bf16/fp16; pinned, non-blocking copies on CUDA.

    The backend runs its own copy of the network: the caller's ``model`` is not moved, put in eval
    mode or frozen (two backends built from one model on two devices each keep theirs). On CUDA,
    ``fp32`` means fp32 (TF32 off, for the whole process: it is a lower precision nothing has
    checked; a notebook's own GPU training then runs without TF32 too), and a batch that runs
    out of device memory is split in halves and run again (:class:`~capsule_triage.errors.DeviceError`
    at one frame).

    On CUDA, :meth:`submit` returns once a call's runs are queued on the device: each run's frames
    are staged in pinned host memory and copied on a side stream, so the copy of run k+1 overlaps
    the model on run k; the logits come back by a non-blocking copy into pinned memory, waited for
    in ``result()``. The pipeline submits batch k+1 before it waits for batch k, so the copies of
    one batch also overlap the model on the one before, and the decoder's next batch is read while
    the device works. ``cudnn.benchmark`` stays off: the number of frames per run varies (a study's
    last batch, halves after running out of memory, the frames duplicate skipping leaves), and each
    new shape would be measured again; its choices may also differ from those ``triage optimize``
    checked.
    """

    def __init__(self, model: nn.Module, config: ModelConfig, *, device: torch.device, precision: str,
                 batch_size: int | None = None):
        self.device = device
        self.batch_size = batch_size  # frames per forward pass; a larger input is split (None: never split)
        self.precision = precision
        self.name = f"torch-{precision}"
        self.folded = FoldedModel(_own_copy(model, device), config).eval().to(device, memory_format=torch.channels_last)
        for param in self.folded.parameters():
            param.requires_grad_(False)
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        if self.dtype is None:
            exact_fp32(device)

    def logits(self, frames_nhwc: np.ndarray) -> np.ndarray:
        return self.submit(frames_nhwc).result()

    def submit(self, frames_nhwc: np.ndarray) -> "Done | OnDevice":
        """Score ``frames_nhwc``: on the CPU now (:class:`Done`), on CUDA queued on the device
        (:class:`OnDevice`). The frames are read before this returns."""
        parts = [part for run in split_runs(frames_nhwc, self.batch_size) for part in self._fitting(run)]
        return Done(np.concatenate(parts)) if self.stream is None else OnDevice(parts, self.device)

    def _fitting(self, frames_nhwc: np.ndarray) -> list:
        """``_forward``, in halves while a batch does not fit in device memory. The halves run after
        the ``except`` block: inside it the exception's traceback keeps the failed attempt's tensors
        alive (PyTorch FAQ), and the halves would not fit either."""
        try:
            return self._forward(frames_nhwc)
        except torch.AcceleratorError as exc:  # sticky: this process cannot use the device again
            raise _device_error(self.device, exc) from None
        except RuntimeError as exc:  # torch.OutOfMemoryError, or the CPU allocator's plain RuntimeError (QA 55 #8)
            if not out_of_memory(exc):
                raise
        if self.device.type == "cuda":
            try:
                torch.cuda.synchronize(self.device)  # runs queued earlier release their memory first
                torch.cuda.empty_cache()
            except torch.AcceleratorError as exc:  # one of them failed on the device
                raise _device_error(self.device, exc) from None
        if len(frames_nhwc) == 1:
            raise DeviceError(self.device, f"out of memory for one {frames_nhwc.shape[1]}x{frames_nhwc.shape[2]} frame "
                                           "(another process on the device, or a model too large for it?)")
        half = (len(frames_nhwc) + 1) // 2
        return self._fitting(frames_nhwc[:half]) + self._fitting(frames_nhwc[half:])

    def _forward(self, frames_nhwc: np.ndarray) -> list:
        """One run: ``[logits]`` on the CPU; on CUDA ``[(pinned logits, event)]``, the event recorded
        after the copy back to the host."""
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            if self.stream is None:
                return [self.folded(torch.from_numpy(frames_nhwc)).float().numpy()]
            boxes = self._host_boxes(frames_nhwc)  # before the copy: found on the device, they wait for it (rev90 #9)
            with torch.cuda.stream(self.stream):
                frames = to_device_nchw(frames_nhwc, self.device).permute(0, 2, 3, 1)
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(self.stream)
            frames.record_stream(current)  # allocated on the side stream, used on this one
            logits = self.folded(frames, boxes).float()
            host = torch.empty(logits.shape, dtype=torch.float32, pin_memory=True)
            host.copy_(logits, non_blocking=True)
            copied = torch.cuda.Event(blocking=True)  # rev-GPU #5: its wait sleeps, leaving the core to the decoders
            copied.record(current)
            return [(host, copied)]

    def _host_boxes(self, frames_nhwc: np.ndarray) -> list[tuple[int, int, int]] | None:
        """A field-of-view model's crops of frames still on the host (numpy's fast path), else None."""
        preprocess, size = self.folded.preprocess, self.folded.preprocess.input_size
        if preprocess.border != "fov" or frames_nhwc.shape[1:3] == (size, size):
            return None
        return fov_boxes(torch.from_numpy(frames_nhwc).permute(0, 3, 1, 2))


class OnDevice:
    """The logits of a call queued on a CUDA device: ``result()`` waits for each run's copy back."""

    def __init__(self, parts: list, device: torch.device):
        self.parts = parts
        self.device = device

    def result(self) -> np.ndarray:
        try:
            for _, copied in self.parts:
                copied.synchronize()
        except torch.AcceleratorError as exc:  # a kernel's failure shows at the first wait after it
            raise _device_error(self.device, exc) from None
        return np.concatenate([host.numpy() for host, _ in self.parts])


def _device_error(device: torch.device, exc: Exception) -> DeviceError:
    return DeviceError(device, f"device error ({str(exc).splitlines()[0]}); this process cannot use it again")


def _own_copy(model: nn.Module, device: torch.device) -> nn.Module:
    """A copy of ``model``'s modules on ``device`` with frozen parameters: building a backend never
    moves, freezes or switches the caller's model to eval mode.

    The tensors are copied straight to ``device`` (no second copy in host memory for a large network
    on a GPU). On the CPU the copy shares the caller's tensor storage (no copy of a large network): a
    caller who goes on training the same model object changes what the backend scores with.
    """
    memo = {id(p): nn.Parameter(p.detach().to(device), requires_grad=False) for p in model.parameters()}
    memo.update({id(b): b.to(device) for b in model.buffers()})
    return copy.deepcopy(model, memo)


def static_same_padding(model: nn.Module, input_size: int) -> nn.Module:
    """A copy of ``model`` whose TF-"SAME" convolutions (timm ``Conv2dSame``, e.g. in the ``tf_``
    EfficientNets) pad by constants computed for ``input_size`` instead of from each input's shape.

    ``Conv2dSame`` computes its padding at run time, which exports to ONNX as Shape/Gather/Ceil/...
    arithmetic and a separate Pad copying the whole activation. With constant pads ONNX Runtime
    folds the Pad into the convolution (same numbers: zero padding either way). On the shipped
    Lite0, Pad alone took 9% of the int8 model's time, 1 thread (ONNX Runtime profiler, 2026-11-22).
    """
    from timm.layers import Conv2dSame
    from timm.layers.padding import get_same_padding

    model = copy.deepcopy(model).eval()
    sizes: dict[str, tuple[int, int]] = {}
    hooks = [module.register_forward_pre_hook(lambda _m, args, name=name: sizes.__setitem__(name, tuple(args[0].shape[-2:])))
             for name, module in model.named_modules() if type(module) is Conv2dSame]
    if not hooks:
        return model
    with torch.inference_mode():
        model(torch.zeros(1, 3, input_size, input_size))
    for hook in hooks:
        hook.remove()
    for name, (height, width) in sizes.items():
        same = model.get_submodule(name)
        conv = nn.Conv2d(same.in_channels, same.out_channels, same.kernel_size, stride=same.stride, padding=0,
                         dilation=same.dilation, groups=same.groups, bias=same.bias is not None)
        conv.load_state_dict(same.state_dict())
        pad_h = get_same_padding(height, same.kernel_size[0], same.stride[0], same.dilation[0])
        pad_w = get_same_padding(width, same.kernel_size[1], same.stride[1], same.dilation[1])
        pad = nn.ZeroPad2d((pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, nn.Sequential(pad, conv))
    return model


@contextlib.contextmanager
def _removed_on_error(path: Path):
    try:
        yield
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def export_onnx(model: nn.Module, config: ModelConfig, path: str | Path) -> Path:
    """Export the folded model (uint8 NHWC input, dynamic batch) with the TorchScript-based exporter.

    Only fixed preprocessing folds into a graph: for a model that detects the field of view (border
    "fov") the graph takes frames already cropped to their view at the input size (the crop is
    data-dependent and runs on the host: :class:`capsule_triage.backends.ViewCropped`).
    """
    size = config.input_size
    folded = FoldedModel(static_same_padding(model, size), config).eval()
    example = torch.zeros((2, size, size, 3), dtype=torch.uint8)
    partial = Path(path).with_suffix(".partial")
    with torch.inference_mode(), warnings.catch_warnings(), _removed_on_error(partial):
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks become constants: intended
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch.onnx")  # the TorchScript exporter, chosen
        warnings.filterwarnings("ignore", category=UserWarning, module="torch.onnx")
        torch.onnx.export(
            folded, (example,), str(partial), input_names=["frames"], output_names=["logits"],
            dynamic_axes={"frames": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False,
        )
    os.replace(partial, path)  # whole or not at all: an interrupted export leaves no half file for backends.json to vouch for
    return Path(path)
