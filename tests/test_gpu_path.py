"""The CUDA path, checked on the CPU where it can be (review 2026-12-01): a backend never moves or
freezes the caller's model; a batch that does not fit in device memory runs in halves; device
numbers and GPUs the PyTorch build has no kernels for are named before any work; ONNX Runtime gets
the GPU asked for, or refuses to run on the CPU in its place; a device failure stops a batch."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from capsule_triage import device as device_module
from capsule_triage.backends import OnnxBackend, gpu_providers
from capsule_triage.device import auto_device_note, cuda_unsupported, resolve_device
from capsule_triage.errors import DataWarning, DeviceError
from capsule_triage.model_config import ModelConfig
from capsule_triage.onnx_gpu import CUDA_OPTIONS, LOCK_NAME, TENSORRT, engine_lock, tensorrt_profile
from capsule_triage.torch_backend import TorchBackend, export_onnx
from capsule_triage.weights import create_model

WHEEL_ARCHS = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]  # the pinned torch 2.14.1 cu130 wheel


@pytest.fixture()
def model_and_config():
    torch.manual_seed(0)
    config = ModelConfig(architecture="test_efficientnet", class_names=["non-bleeding", "bleeding"], abnormal_classes=["bleeding"],
                         input_size=32, name="gpu-path")
    return create_model(config).train(), config


def _frames(n: int) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 255, (n, 32, 32, 3), dtype=np.uint8)


def test_a_backend_leaves_the_callers_model_where_and_as_it_was(model_and_config):
    """Two backends from one model on two devices: building the second moved the shared network
    (the GPU test built CUDA then CPU backends and the CUDA one failed); eval/frozen leaked too."""
    model, config = model_and_config
    cpu = TorchBackend(model, config, device=torch.device("cpu"), precision="fp32")
    expected = cpu.logits(_frames(4))
    TorchBackend(model, config, device=torch.device("meta"), precision="fp32")  # another device: no data needed
    np.testing.assert_array_equal(cpu.logits(_frames(4)), expected)
    assert model.training and all(p.requires_grad and p.device.type == "cpu" for p in model.parameters())
    assert not any(p.requires_grad for p in cpu.folded.parameters()) and not cpu.folded.training


def test_a_batch_that_does_not_fit_runs_in_halves_and_one_frame_that_does_not_is_one_line(model_and_config, monkeypatch):
    model, config = model_and_config
    backend = TorchBackend(model, config, device=torch.device("cpu"), precision="fp32")
    frames = _frames(7)
    expected = backend.logits(frames)
    forward, sizes = backend._forward, []

    def small_memory(batch):
        sizes.append(len(batch))
        if len(batch) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(batch)

    monkeypatch.setattr(backend, "_forward", small_memory)
    np.testing.assert_allclose(backend.logits(frames), expected, atol=1e-5)
    assert sizes == [7, 4, 2, 2, 3, 2, 1]
    # Review: the halves ran inside the except block, whose traceback kept the failed attempt's tensors alive
    import gc
    import weakref

    alive = []

    def failing_with_a_tensor(batch):
        held = torch.zeros(len(batch), 1000)
        alive.append(weakref.ref(held))
        if len(batch) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory")
        gc.collect()
        assert sum(ref() is not None for ref in alive) == 1, "a failed attempt's tensors are still alive"  # only this one
        return forward(batch)

    monkeypatch.setattr(backend, "_forward", failing_with_a_tensor)
    np.testing.assert_allclose(backend.logits(frames), expected, atol=1e-5)
    cpu_sizes = []  # QA 55 #8: the CPU's allocator fails with a plain RuntimeError (a 1024 px model at batch 32: > 12 GB)

    def cpu_allocator(batch):
        cpu_sizes.append(len(batch))
        if len(batch) > 4:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                               "you tried to allocate 3221225472 bytes. Error code 12 (Cannot allocate memory)")
        return forward(batch)

    monkeypatch.setattr(backend, "_forward", cpu_allocator)
    np.testing.assert_allclose(backend.logits(frames), expected, atol=1e-5)
    assert cpu_sizes == [7, 4, 3]
    monkeypatch.setattr(backend, "_forward", lambda batch: (_ for _ in ()).throw(RuntimeError("shapes cannot be multiplied")))
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):  # any other error is not memory: raised as it is
        backend.logits(frames)
    monkeypatch.setattr(backend, "_forward", lambda batch: (_ for _ in ()).throw(torch.OutOfMemoryError("out of memory")))
    with pytest.raises(DeviceError) as error:
        backend.logits(frames[:2])
    assert str(error.value) == ("cpu: out of memory for one 32x32 frame (another process on the device, or a model too large for it?)")
    monkeypatch.setattr(backend, "_forward", lambda batch: (_ for _ in ()).throw(torch.AcceleratorError("CUDA error: an illegal memory access was encountered\nmore")))
    with pytest.raises(DeviceError, match=r"^cpu: device error \(CUDA error: an illegal memory access was encountered\); this process cannot use it again$"):
        backend.logits(frames)


@pytest.fixture()
def fake_gpu(monkeypatch):
    """One GPU of a given compute capability under the pinned wheel's architecture list."""
    def install(capability: tuple[int, int], archs=WHEEL_ARCHS, count: int = 1):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: capability)
        monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(archs))
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Tesla V100-SXM2-16GB" if capability < (7, 5) else "GPU")
        monkeypatch.setattr(device_module, "cuda_possible", lambda: True)
    return install


def test_gpus_the_pytorch_build_cannot_run_are_named_and_auto_falls_back_to_the_cpu(fake_gpu, monkeypatch):
    fake_gpu((7, 0))
    message = ("Tesla V100-SXM2-16GB (compute capability 7.0) is not supported by this PyTorch build "
               "(built for sm_75, sm_80, sm_86, sm_90, sm_100, sm_120)")
    assert cuda_unsupported(0) == message
    assert resolve_device("auto").type == "cpu"
    assert auto_device_note("auto") == f"{message}: running on the CPU" and auto_device_note("cpu") is None
    with pytest.raises(ValueError, match=r"^--device cuda: Tesla V100-SXM2-16GB \(compute capability 7.0\) is not supported"):
        resolve_device("cuda")
    for capability in ((7, 5), (8, 9), (9, 0), (12, 0)):  # sm_XY runs on X.Y to X.9
        fake_gpu(capability)
        assert cuda_unsupported(0) is None and resolve_device("auto") == torch.device("cuda") and auto_device_note("auto") is None
    fake_gpu((12, 1), archs=["sm_80", "compute_90"])  # PTX compiles for newer GPUs
    assert cuda_unsupported(0) is None
    fake_gpu((9, 4), archs=["gfx90a", "gfx942"])
    monkeypatch.setattr(torch.version, "hip", "6.2")  # ROCm: AMD GPUs, no sm_ architectures to compare with
    assert cuda_unsupported(0) is None
    monkeypatch.setattr(torch.version, "hip", None)
    fake_gpu((8, 6), count=2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match=r"^--device cuda:2: this machine has 2 CUDA devices \(cuda:0 to cuda:1\)$"):
        resolve_device("cuda:2")


def test_onnx_runtime_gets_the_gpu_asked_for_or_refuses_to_run_on_the_cpu_in_its_place(model_and_config, tmp_path, monkeypatch):
    model, config = model_and_config
    path = export_onnx(model.eval(), config, tmp_path / "model.fp32.onnx")
    other = export_onnx(create_model(config).eval(), config, tmp_path / "other.fp32.onnx")  # same graph, other weights
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    every = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    providers = gpu_providers("cuda:1", every, path)
    assert [(name, options["device_id"]) for name, options in providers] == [("TensorrtExecutionProvider", 1), ("CUDAExecutionProvider", 1)]
    assert providers[0][1]["trt_engine_cache_enable"] is True
    # Review: TensorRT names an engine after the graph, not its weights: one cache folder per file content
    assert providers[0][1]["trt_engine_cache_path"] != gpu_providers("cuda:1", every, other)[0][1]["trt_engine_cache_path"]
    monkeypatch.setenv("XDG_CACHE_HOME", "/dev/null/cache")  # cannot be made: no cache, not an error
    assert gpu_providers("cuda", every, path)[0] == ("TensorrtExecutionProvider", {"device_id": 0, **tensorrt_profile(path, 32)})
    assert gpu_providers("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"], path) == [  # rev-GPU #1/#2: strict fp32
        ("CUDAExecutionProvider", {"device_id": 0, "use_tf32": "0", "cudnn_conv_algo_search": "HEURISTIC"})]  # (no TF32), no
    # exhaustive cuDNN search per batch shape
    assert gpu_providers("cpu", every, path) == []
    assert OnnxBackend(path, name="ort-fp32").logits(_frames(2)).shape == (2, 2)
    with pytest.raises(ValueError, match=r"^--device cuda:1: ONNX Runtime cannot use the GPU here \(the onnxruntime package has no CUDA provider"):
        OnnxBackend(path, name="ort-fp32", device="cuda:1")  # the CPU-only wheel, as installed here
    with pytest.raises(ValueError, match=r"use a torch-\* backend on the GPU, or --device cpu to run ort-fp32$"):  # rev90 #6: under
        OnnxBackend(path, name="ort-fp32", device="cuda")  # --device auto on a GPU host the user never asked for the GPU


class _LikeCuda:
    """A backend that returns from ``submit`` before scoring, as the CUDA one does: it keeps its own
    copy of the frames (the CUDA one stages them in pinned memory) and scores in ``result()``."""

    def __init__(self, backend, log: list):
        self.backend, self.log, self.calls = backend, log, 0

    def submit(self, frames):
        number, staged = self.calls, frames.copy()
        self.calls += 1
        self.log.append(f"submit {number}")
        backend, log = self.backend, self.log

        class Handle:
            def result(self):
                log.append(f"result {number}")
                return backend.logits(staged)

        return Handle()

    def __getattr__(self, name):
        return getattr(self.backend, name)


def test_the_pipeline_keeps_one_batch_in_flight_and_scores_as_one_call_at_a_time_does(tmp_path):
    """On a GPU, batch k+1 is read and submitted before batch k's scores are waited for; the frames,
    scores and reused duplicates are those of the plain loop, duplicates across batch edges included
    (a plan ran ahead of the previous batch's fill: the skipper scored frames it should reuse)."""
    import av
    import pyarrow.parquet as pq

    from capsule_triage import RunOptions, load_classifier, load_pipeline, triage_study
    from conftest import DEMO_CLIP, encode_clip

    with av.open(str(DEMO_CLIP)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)][:18]
    stalled = encode_clip([f for f in frames for _ in range(3)], tmp_path / "stalled.mp4")  # a capsule that stalls
    pipeline = load_pipeline("capsule-bleeding")
    results = {}
    for kind, batch_size in (("plain", 4), ("plain", 64), ("in flight", 4)):  # 64: the whole clip in one batch
        classifier, log = load_classifier(pipeline, device="cpu"), []
        if kind == "in flight":
            classifier.backend = _LikeCuda(classifier.backend, log)
        for skip in (None, 2.0):
            out = tmp_path / f"{kind} {batch_size} {skip}"
            result = triage_study(stalled, pipeline, classifier, RunOptions(out=out, batch_size=batch_size, skip_duplicates=skip))
            results[kind, batch_size, skip] = (pq.read_table(out / "frames.parquet").to_pydict(), result.run["frames_reused_as_duplicates"])
            if kind == "in flight" and skip is None:
                calls = -(-54 // 4)
                assert log == ["submit 0", *(item for n in range(1, calls) for item in (f"submit {n}", f"result {n - 1}")), f"result {calls - 1}"]
            log.clear()
    assert results["in flight", 4, None] == results["plain", 4, None]
    (skipped, reused), (whole, whole_reused) = results["in flight", 4, 2.0], results["plain", 64, 2.0]
    assert reused == whole_reused >= 30  # two of each three frames, across batch edges too (the clip in one batch has none)
    assert skipped["frame_index"] == whole["frame_index"] and skipped["flagged"] == whole["flagged"]
    np.testing.assert_allclose(skipped["score"], whole["score"], atol=1e-5)


@pytest.mark.gpu
def test_on_cuda_submit_returns_before_the_result_and_the_frames_may_be_reused(model_and_config):
    """Two calls in flight, split into runs (the copy of a run overlaps the model on the one before),
    with their frames overwritten as soon as submit returned: the logits are the CPU's."""
    model, config = model_and_config
    cpu = TorchBackend(model, config, device=torch.device("cpu"), precision="fp32")
    gpu = TorchBackend(model, config, device=torch.device("cuda"), precision="fp32", batch_size=3)
    first, second = _frames(7), _frames(5)
    expected = [cpu.logits(first), cpu.logits(second)]
    pending = [gpu.submit(first), gpu.submit(second)]
    assert [len(p.parts) for p in pending] == [3, 2]
    first[:], second[:] = 0, 255
    for handle, logits in zip(pending, expected):
        np.testing.assert_allclose(handle.result(), logits, atol=1e-4)


def test_a_device_failure_on_the_batch_in_flight_is_reported_before_a_decoder_error_after_it(tmp_path, monkeypatch):
    """Review: with one batch in flight, a decoder error on batch k+1 was raised before batch k's
    result was waited for, so a failed GPU was recorded as a bad input and a batch went on."""
    from capsule_triage import RunOptions, load_classifier, load_pipeline, pipeline as pipeline_module, triage_study
    from capsule_triage.errors import InputError
    from capsule_triage.frames import FrameBatch
    from conftest import DEMO_CLIP

    def one_batch_then_a_damaged_file(path, *args, **kwargs):
        yield FrameBatch(np.zeros((4, 224, 224, 3), np.uint8), np.arange(4), np.arange(4) / 4)
        raise InputError(path, "decoder failed")

    class FailsOnTheDevice:
        def result(self):
            raise DeviceError("cuda:0", "device error (CUDA error: an illegal memory access was encountered); this process cannot use it again")

    pipeline = load_pipeline("capsule-bleeding")
    classifier = load_classifier(pipeline, device="cpu")
    classifier.backend = _LikeCuda(classifier.backend, [])
    monkeypatch.setattr(pipeline_module, "stream_frames", one_batch_then_a_damaged_file)
    monkeypatch.setattr(classifier.backend, "submit", lambda frames: FailsOnTheDevice())
    with pytest.raises(DeviceError, match="illegal memory access"):
        triage_study(DEMO_CLIP, pipeline, classifier, RunOptions(out=tmp_path / "out"))
    monkeypatch.setattr(classifier.backend, "submit", _LikeCuda(classifier.backend.backend, []).submit)
    with pytest.raises(InputError, match="decoder failed"):  # a device that worked: the decoder's error
        triage_study(DEMO_CLIP, pipeline, classifier, RunOptions(out=tmp_path / "out"))
    assert list(tmp_path.iterdir()) == []


def test_a_gpu_pytorch_cannot_use_is_said_as_such_and_left_out_of_a_batch(fake_gpu, monkeypatch):
    """rev90: #3 a GPU with a CPU-only PyTorch (or a driver older than its CUDA) was "CUDA is not available on this machine",
    and auto fell back to the CPU without a word; #1 a batch gave every GPU a worker, and the one on a GPU this build has no
    kernels for stopped the night at its setup; #4 bf16 on a GPU without it (compute capability < 8.0) ran emulated."""
    from capsule_triage.backend_choice import choose_backend
    from capsule_triage.batch.engine import BatchOptions
    from capsule_triage.batch.local_engine import LocalEngine
    from capsule_triage.device import bf16_unsupported, check_precision, usable_gpus

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_module, "cuda_possible", lambda: False)
    with pytest.raises(ValueError, match=r"^--device cuda: CUDA is not available on this machine \(use cpu or auto\)$"):
        resolve_device("cuda")
    assert auto_device_note("auto") is None  # no driver: nothing to explain
    monkeypatch.setattr(device_module, "cuda_possible", lambda: True)  # the driver is there
    monkeypatch.setattr(torch.version, "cuda", None)
    cpu_only = "this PyTorch build has no CUDA (a CPU-only wheel): install torch from PyPI or PyTorch's CUDA index to use the GPU"
    with pytest.raises(ValueError, match=re.escape(f"--device cuda: {cpu_only} (use cpu or auto)")):
        resolve_device("cuda")
    assert auto_device_note("auto") == f"{cpu_only}: running on the CPU"
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    assert auto_device_note("auto") == ("the NVIDIA driver is loaded but PyTorch (CUDA 13.0) cannot use a GPU: a driver older than "
                                        "the build's CUDA, or none visible (CUDA_VISIBLE_DEVICES): running on the CPU")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # rev91 #2: GPUs hidden on purpose, or a system where the driver's
    assert auto_device_note("auto") is None  # presence is not known (cuda_possible is True off Linux): nothing said
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(device_module.sys, "platform", "darwin")
    assert auto_device_note("auto") is None
    monkeypatch.setattr(device_module.sys, "platform", "linux")

    fake_gpu((8, 6), count=3)
    capabilities = [(8, 6), (6, 0), (7, 5)]  # cuda:1 a P100 the cu130 wheel has no kernels for
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: capabilities[index])
    usable, left = usable_gpus()
    assert usable == ["cuda:0", "cuda:2"] and left == [
        "cuda:1 is left out: GPU (compute capability 6.0) is not supported by this PyTorch build (built for sm_75, sm_80, sm_86, "
        "sm_90, sm_100, sm_120)"]
    engine = LocalEngine(BatchOptions(device="cuda"))
    assert engine.devices == usable and engine.workers == 2 and engine.notes == left
    assert bf16_unsupported("cuda:0") is None and bf16_unsupported("cpu") is None
    assert bf16_unsupported("cuda:2") == "GPU (compute capability 7.5) has no native bf16"
    check_precision("bf16", torch.device("cuda", 0))
    with pytest.raises(ValueError, match=r"^--precision bf16: GPU \(compute capability 7.5\) has no native bf16; use fp16"):
        check_precision("bf16", torch.device("cuda", 2))
    with pytest.raises(ValueError, match=r"^backend torch-bf16: GPU \(compute capability 7.5\) has no native bf16; use torch-fp16"):
        choose_backend("torch-bf16", "cuda:2", None, "id")
    said = choose_backend("torch-bf16", "cuda:0", None, "id")["warnings"]  # #5: optimize checks no bf16 on a GPU
    assert said == ["torch-bf16 has not been checked against fp32 for these weights (`triage optimize` checks only torch-fp16 on "
                    "a GPU); its scores may differ from fp32"]


def test_on_cuda_halves_wait_for_the_device_first_and_a_failed_wait_is_a_device_error(model_and_config, monkeypatch):
    """rev90 #11: the CUDA branch of running in halves (the runs queued earlier release their memory first) and the
    translation of a kernel's failure seen at the wait for its logits, run on the CPU with the device calls recorded."""
    from capsule_triage.torch_backend import OnDevice

    model, config = model_and_config
    backend = TorchBackend(model, config, device=torch.device("cpu"), precision="fp32")
    frames, forward, calls = _frames(7), backend._forward, []
    expected = backend.logits(frames)
    backend.device = torch.device("cuda", 1)  # _fitting's CUDA branch, with CPU tensors
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(f"synchronize {device}"))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))

    def small_memory(batch):
        if len(batch) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(batch)

    monkeypatch.setattr(backend, "_forward", small_memory)
    np.testing.assert_allclose(np.concatenate(backend._fitting(frames)), expected, atol=1e-5)
    assert calls == ["synchronize cuda:1", "empty_cache"] * 3  # at 7, 4 and 3 frames
    failed = torch.AcceleratorError("CUDA error: an illegal memory access was encountered\nCompile with TORCH_USE_CUDA_DSA")
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: (_ for _ in ()).throw(failed))
    said = r"^cuda:1: device error \(CUDA error: an illegal memory access was encountered\); this process cannot use it again$"
    with pytest.raises(DeviceError, match=said):
        backend._fitting(frames)

    class Event:
        def __init__(self, error=None):
            self.error = error

        def synchronize(self):
            if self.error:
                raise self.error

    assert OnDevice([(torch.ones(2, 2), Event()), (torch.zeros(1, 2), Event())], torch.device("cuda", 1)).result().tolist() == [
        [1, 1], [1, 1], [0, 0]]
    with pytest.raises(DeviceError, match=said):
        OnDevice([(torch.ones(2, 2), Event()), (torch.zeros(1, 2), Event(failed))], torch.device("cuda", 1)).result()


def test_onnx_runtime_on_a_gpu_scores_ahead_on_a_copy_of_the_frames(model_and_config, tmp_path):
    """rev90 #7: on a GPU ``session.run`` copies, runs and copies back before it returns, so ``submit`` returned the scores
    and the pipeline's next batch waited for the device: it scores ahead in a thread of its own (the default on CUDA,
    ``ahead=True`` here), on its own copy of the frames, which the caller may reuse once ``submit`` returns."""
    import threading

    model, config = model_and_config
    path = export_onnx(model.eval(), config, tmp_path / "model.fp32.onnx")
    now, ahead = OnnxBackend(path, name="ort-fp32"), OnnxBackend(path, name="ort-fp32", ahead=True)
    assert now._ahead is None  # on the CPU the scores are computed in submit, on the cores decoding shares
    frames = _frames(5)
    expected = now.logits(frames)
    release = threading.Event()
    ahead._ahead.submit(release.wait)  # the thread busy: the frames are scored only after the caller has reused them
    pending = ahead.submit(frames)
    frames[:] = 0
    release.set()
    np.testing.assert_allclose(pending.result(), expected, atol=1e-6)
    ahead.close()
    assert ahead._ahead is None and ahead._pool is None


def test_a_field_of_view_model_s_crops_found_on_the_host_are_those_the_graph_finds(model_and_config):
    """rev90 #9: a field-of-view model found its crops inside the graph, on a GPU a copy of the bright-pixel mask to the host
    that waited for every batch queued before it: the CUDA path finds them on the host before the copy and gives them to
    the graph; they are the graph's own, and the graph crops where it is told."""
    from dataclasses import replace

    from capsule_triage.preprocess import fov_boxes

    model, config = model_and_config
    fov = replace(config, border="fov", border_radius=1.0)
    backend = TorchBackend(model, fov, device=torch.device("cpu"), precision="fp32")
    frames = np.zeros((3, 64, 112, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:64, :112]
    for i, centre in enumerate((30, 56, 80)):  # a round view at three places in a 16:9 frame's black border
        frames[i][(yy - 32) ** 2 + (xx - centre) ** 2 < 28 ** 2] = (180, 90, 60)
    frames[:, 2:6, 100:110] = 255  # burned-in text
    boxes = backend._host_boxes(frames)
    assert boxes == fov_boxes(torch.from_numpy(frames).permute(0, 3, 1, 2)) and len({left for _, left, _ in boxes}) == 3
    with torch.inference_mode():
        found, given = backend.folded(torch.from_numpy(frames)), backend.folded(torch.from_numpy(frames), boxes)
        elsewhere = backend.folded(torch.from_numpy(frames), [(0, 0, 64)] * 3)
    assert torch.equal(found, given) and not torch.equal(found, elsewhere)
    assert backend._host_boxes(frames[:, :32, :32]) is None  # already the model's size: taken as cropped
    assert TorchBackend(model, config, device=torch.device("cpu"), precision="fp32")._host_boxes(frames) is None  # no fov


def test_tensorrt_gets_a_profile_of_the_run_and_builds_one_engine_at_a_time(model_and_config, tmp_path, monkeypatch):
    """Review rev90 #8: TensorRT had no shape profile, so an engine was built for the first run's size and again for each
    other (a study's last, shorter run); the workers of one host built it at once, each writing it where the others read
    it. The profile covers runs of 1 to the run size, the runs never exceed it, and the session is made and first run
    (the engine built) under an exclusive lock on the cache folder. ONNX Runtime here has no TensorRT: a fake session
    stands in for it."""
    import fcntl

    import capsule_triage.backends as backends

    model, config = model_and_config
    path = export_onnx(model.eval(), config, tmp_path / "model.fp32.onnx")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    every = [TENSORRT, "CUDAExecutionProvider", "CPUExecutionProvider"]
    tensorrt = dict(gpu_providers("cuda", every, path, 8))[TENSORRT]
    assert [tensorrt[f"trt_profile_{end}_shapes"] for end in ("min", "opt", "max")] == ["frames:1x32x32x3", "frames:8x32x32x3",
                                                                                       "frames:8x32x32x3"]
    assert dict(gpu_providers("cuda", every, path))[TENSORRT]["trt_profile_max_shapes"] == "frames:32x32x32x3"

    def held(cache: str) -> bool:
        """Whether another open file of the cache's lock cannot take it now."""
        with open(Path(cache) / LOCK_NAME, "a") as probe:
            try:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(probe, fcntl.LOCK_UN)
            return False

    cache = tensorrt["trt_engine_cache_path"]
    with engine_lock([(TENSORRT, tensorrt)]):
        assert held(cache)
    assert not held(cache)
    with engine_lock([("CUDAExecutionProvider", {"device_id": 0})]):  # no engine cache: nothing to hold
        assert not held(cache)
    calls = []

    class FakeSession:
        def __init__(self, path, options, providers):
            self.providers = [name if isinstance(name, str) else name[0] for name in providers]
            calls.append(("made", held(cache), dict(p for p in providers if not isinstance(p, str))[TENSORRT]))

        def get_providers(self):
            return self.providers

        def get_inputs(self):
            return [type("Input", (), {"name": "frames", "type": "tensor(uint8)", "shape": ["batch", 32, 32, 3]})]

        def run(self, outputs, feed):
            frames = feed["frames"]
            calls.append(("run", held(cache), frames.shape, frames.dtype))
            return [np.zeros((len(frames), 2), np.float32)]

    real = backends.import_onnxruntime()
    fake = type("FakeOrt", (), {"SessionOptions": real.SessionOptions, "GraphOptimizationLevel": real.GraphOptimizationLevel,
                                "InferenceSession": FakeSession, "get_available_providers": staticmethod(lambda: every)})
    monkeypatch.setattr(backends, "import_onnxruntime", lambda: fake)
    for batch_size, run in ((None, 32), (4, 4)):
        calls.clear()
        backend = OnnxBackend(path, name="ort-fp32", device="cuda", ahead=False, batch_size=batch_size)
        assert calls[0][:2] == ("made", True) and calls[0][2]["trt_profile_max_shapes"] == f"frames:{run}x32x32x3"
        assert calls[1] == ("run", True, (run, 32, 32, 3), np.uint8)  # the engine built under the lock
        calls.clear()
        assert backend.logits(_frames(40)).shape == (40, 2) and backend.run_size == run
        assert [c[2][0] for c in calls] == [run] * (40 // run) + ([40 % run] if 40 % run else [])  # never past the profile
        assert not any(c[1] for c in calls)  # the lock was let go
    # rev94 #3: an int8 file's unsigned, asymmetric Q/DQ nodes are not TensorRT's: the CUDA provider runs it
    assert [name for name, _ in gpu_providers("cuda", every, path, tensorrt=False)] == ["CUDAExecutionProvider"]
    with pytest.raises(KeyError):
        OnnxBackend(path, name="ort-int8", device="cuda", ahead=False)  # the stand-in looks for TensorRT's options
    # rev94 #2: without TensorRT the file is neither read nor digested, and no cache folder is made
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache2"))
    assert gpu_providers("cuda", ["CUDAExecutionProvider"], tmp_path / "not-read.onnx") == [("CUDAExecutionProvider", {"device_id": 0,
                                                                                                        **CUDA_OPTIONS})]
    assert not (tmp_path / "cache2").exists()
    # rev94 #7: a process stopped while it held the lock held every worker without a word: the wait is said
    real_flock, tries = fcntl.flock, []

    def held_elsewhere(file, how):
        tries.append(how)
        if how & fcntl.LOCK_NB and len(tries) == 1:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        return real_flock(file, how)

    monkeypatch.setattr(fcntl, "flock", held_elsewhere)
    with pytest.warns(DataWarning, match=r": waiting for another process that is building or loading this TensorRT engine \(it "
                                         r"holds \.building\.lock there; a stopped one holds every worker\)$"):
        with engine_lock([(TENSORRT, tensorrt)]):
            assert tries == [fcntl.LOCK_EX | fcntl.LOCK_NB, fcntl.LOCK_EX]
    # rev94 #1: a file system without flock (ENOSYS on Lustre without -o flock) runs without the lock, not without the GPU
    monkeypatch.setattr(fcntl, "flock", lambda *a: (_ for _ in ()).throw(OSError(38, "Function not implemented")))
    with engine_lock([(TENSORRT, tensorrt)]):
        pass
