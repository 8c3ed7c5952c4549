"""The classifier: a model loaded once, scoring batches of frames.

``Classifier.__call__(FrameBatch) -> FrameScores`` is pure (no state changes between calls), so the
same class runs in-process, in a batch worker, or inside a Ray actor, each process loading its own (one is not copied,
pickled or used in a fork of the process that loaded it). Which engine runs the model
(PyTorch fp32/bf16/fp16, ONNX Runtime fp32/int8, OpenVINO fp32/bf16/int8) is a
:mod:`capsule_triage.backends` backend, chosen by :func:`choose_backend`. On an ONNX Runtime or
OpenVINO backend neither torch nor timm is imported: the model runs from the ONNX file that
``triage optimize`` exported from these exact weights.
"""

from __future__ import annotations

import ctypes
import numbers
import os
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from .backend_choice import BACKENDS_FILE, choose_backend, read_backend_report  # noqa: F401 - re-exported
from .backends import BACKENDS, ENGINE_MODULES, Done, engine_error, inference_threads, onnx_backend, onnx_file
from .device import auto_device_note, device_name
from .digests import weights_digests, weights_sha256
from .hub import fetch_weights
from .errors import DeviceError, WeightsError
from .frames import FrameBatch
from .model_card import use_beside
from .model_config import WEIGHTS_NAME, ModelConfig, folder_config, preset_differences, unfinished_training

if TYPE_CHECKING:
    from torch import nn

CLOSED = "this Classifier is closed (close() or the end of its with block): load another"
# QA 124 #1: a Classifier used in a child made by fork (multiprocessing's default on Linux before Python 3.14) hung in its
# engine's thread pool (OpenVINO, ONNX Runtime, PyTorch's OpenMP) for good; #2: pickling the default one said "cannot pickle
# 'CompiledModel'". rev110 #2: a fork child that loads its own can hang too (PyTorch's OpenMP), so the start method leads.
IN_EACH_PROCESS = ("start worker processes with multiprocessing's 'spawn' or 'forkserver' method and load one in each "
                   "(as `triage batch` does): in a fork of a process that has loaded one, any engine can hang")
_LOADED: "weakref.WeakSet[Classifier]" = weakref.WeakSet()


def _keep_engines_in_fork_children() -> None:
    """In a child made by fork, the parent's classifiers keep their engines for good (rev110 #1): an engine's cleanup
    (close(), the end of a with block, the object dropped, the child's own exit) waits there on threads that stayed in
    the parent, and hung (OpenVINO's request queue). Their Python objects are never freed in the child."""
    for classifier in list(_LOADED):
        if getattr(classifier, "backend", None) is not None:
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(classifier.backend))


os.register_at_fork(after_in_child=_keep_engines_in_fork_children)


@dataclass
class FrameScores:
    """Class probabilities for a batch of frames.

    Attributes:
        probs: float32 [N, C] softmax probabilities in ``ModelConfig.class_names`` order.
        frame_index: int64 [N], the batch's own array (not a copy).
        pts_seconds: float64 [N], the batch's own array (not a copy).
    """

    probs: np.ndarray
    frame_index: np.ndarray
    pts_seconds: np.ndarray


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


class Classifier:
    """A model with its preprocessing, on one device, in inference mode.

    ``batch_size`` is the smallest call that keeps the backend as busy as ``triage optimize``
    measured fastest (its batch size per run x its streams; None without a measurement). The
    backend splits a larger call into runs of the measured size, so the pipeline may read in larger
    batches (fewer Python round trips per frame, see :func:`capsule_triage.pipeline.read_batch_size`).

    Args:
        model: the timm network (weights loaded); may be None when the backend is an ONNX one.
        config: its :class:`ModelConfig`.
        device: "auto", "cpu", "cuda", "cuda:N".
        backend: one of :data:`BACKENDS` or "auto" (see :func:`choose_backend`).
        weights_id: SHA-256 of the weights, for provenance.
        weights_dir: the weights folder (where ``triage optimize`` put ONNX files and backends.json).
        threads: intra-op threads of the backend (default: the layout ``triage optimize`` measured
            fastest, else the backend's own default of one per core). For a torch backend this is
            PyTorch's thread count, which is process-wide (``torch.set_num_threads``): it applies to all
            torch work in the process, other classifiers included, until set again.
        selection: the backend choice already made by :func:`choose_backend` (default: made here).
        weights_file: the weights file loaded, when they were given as one (.safetensors, .pth, .npz), not a folder.
    """

    def __init__(self, model: "nn.Module | None", config: ModelConfig, *, device: str = "auto", backend: str = "auto",
                 weights_id: str = "", weights_dir: Path | None = None, threads: int | None = None,
                 selection: dict | None = None, weights_file: Path | None = None):
        threads = _check_threads(threads)
        self.pid = os.getpid()  # the process whose engine this is (see usable)
        _LOADED.add(self)
        self.config = config
        self.loaded_threshold: float | None = None  # load_classifier's threshold (backend choice only; the run ranks at its own)
        self.loaded_for: list[str] | None = None  # load_classifier's preset's classes (weights of others run as trained)
        self.device = device_name(device)
        self.weights_id = weights_id
        # run.json's weights_path: the folder, or a weights file given as such (QA 44: recorded nowhere, the SHA-256 only)
        self.weights_path = str(Path(weights_dir or weights_file).absolute()) if weights_dir or weights_file else None
        self.intended_use = use_beside(weights_dir)  # kept in run.json: the page needs it after the folder moves
        self.threads = threads
        self.selection = selection or noted(choose_backend(backend, self.device, weights_dir, weights_id, threads=threads),
                                             auto_device_note(device))
        name = self.selection["backend"]
        tuning = self.selection.get("tuning", {})
        streams = 1 if threads else tuning.get("streams", 1)  # given threads run one stream (rev88 #2: batches for 64 were read)
        self.batch_size = tuning.get("batch_size", 0) * streams or None  # frames per call to keep every stream busy
        if onnx_file(name):
            layout = {"threads": threads} if threads else {"threads": tuning.get("threads"), "streams": tuning.get("streams", 1)}
            try:
                self.backend = onnx_backend(name, self.selection["onnx_file"], view=config, batch_size=tuning.get("batch_size"),
                                            device=self.device, **layout)
            except ValueError:
                raise
            except ImportError as exc:  # QA 107 #4: an engine installed but broken blamed the ONNX file ("optimize again")
                own = (exc.name or "").split(".")[0] == ENGINE_MODULES[name.split("-")[0]]
                error = f"{exc.name} ({str(exc).strip()[:160]})" if own else engine_error(name)  # QA 113 #7: a library the
                if error is None:  # engine imports failed to import (not named); rev97 #2: torch's own (ViewCropped) is raised
                    raise
                raise DeviceError(name, f"cannot import its engine, {error}: reinstall it, or give --backend torch-fp32") from None
            except Exception as exc:  # noqa: BLE001 - ONNX Runtime / OpenVINO errors on a damaged file have no common base
                detail = str(exc).strip().splitlines()[-1][:160] if str(exc).strip() else type(exc).__name__
                out_of_memory = isinstance(exc, MemoryError) or "bad_alloc" in detail or "Failed to allocate" in detail
                advice = ("out of memory (a memory limit such as `ulimit -v`?); free memory or raise the limit" if out_of_memory
                          else "run `triage optimize` again")
                raise WeightsError(self.selection["onnx_file"], f"cannot load it with {name} ({detail}); {advice}") from None
        else:
            if model is None:
                raise ValueError(f"backend {name} needs the network itself, not only its ONNX export")
            import torch

            from .torch_backend import TorchBackend

            if threads:
                torch.set_num_threads(threads)
            self.backend = TorchBackend(model, config, device=torch.device(self.device), precision=name.split("-")[1],
                                        batch_size=tuning.get("batch_size"))

    @classmethod
    def load(cls, weights: str | Path, base_config: ModelConfig | None = None, *, device: str = "auto",
             backend: str = "auto", threads: int | None = None, note: str | None = None,
             rank: Callable[[ModelConfig], object] | None = None) -> "Classifier":
        """Load weights (folder, file or ``hf-hub:`` repository, see :func:`capsule_triage.weights.load_model`).

        The network is built only for a torch backend; an ONNX backend needs just the folder's
        config.json and the ONNX file made from these weights (checked against the network's SHA-256
        that ``triage optimize`` recorded, see :mod:`capsule_triage.backend_choice`). ``note``: a line
        for the user about how the weights were found (a ``Warning:`` line and run.json's backend_selection).
        ``rank``: the run's event settings (a RankParams) for a model config, so that ``auto`` takes only
        what the agreement check covered (see :func:`~capsule_triage.backend_choice.choose_backend`).
        """
        threads = _check_threads(threads)  # before any loading (QA 58 #6: OpenVINO blamed the ONNX file, torch gave its own error)
        weights, fetched = fetch_weights(weights)  # an hf-hub: repository as its cached folder
        note = note or fetched  # a cached copy standing in for a Hub that could not be reached
        path = Path(str(weights))
        weights_dir = path if path.is_dir() else None
        digests = weights_digests(path) if path.exists() else {}
        weights_id = weights_sha256(path, digests) if path.exists() else str(weights)
        if weights_dir is None and backend in BACKENDS and onnx_file(backend):  # QA 113 #1: "weights: ... run `triage optimize` on this weights folder"
            raise WeightsError(path, f"backend {backend} runs {onnx_file(backend)}, which `triage optimize` exports into a weights "
                                     "folder (config.json + model.safetensors); a single weights file runs on torch-fp32 or torch-bf16")
        device, device_note = device_name(device), auto_device_note(device)
        events = asdict(rank(folder_config(weights_dir, base_config))) if rank is not None and weights_dir is not None else None
        selection = noted(choose_backend(backend, device, weights_dir, weights_id, model_sha256=digests.get(WEIGHTS_NAME),
                                          rank_params=events, threads=threads), device_note)
        if weights_dir is not None and onnx_file(selection["backend"]):
            model, config = None, folder_config(weights_dir, base_config)
        else:
            from .weights import load_model

            model, config = load_model(weights, base_config)
        for line in (note, unfinished_training(config), preset_differences(config, base_config)):
            selection = noted(selection, line)
        return cls(model, config, device=device, weights_id=weights_id, weights_dir=weights_dir, threads=threads,
                   selection=selection, weights_file=path if path.is_file() else None)

    @property
    def precision(self) -> str:
        return self.usable().precision

    def close(self) -> None:
        """Free the backend (its threads and memory) now; a dropped classifier is freed too, when collected. Scoring
        after it raises ValueError. ``with load_classifier(pipeline) as classifier:`` closes it at the block's end."""
        backend, self.backend = getattr(self, "backend", None), None
        if backend is not None and hasattr(backend, "close") and os.getpid() == self.pid:  # (a fork's is kept: see above)
            backend.close()

    def __enter__(self) -> "Classifier":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self.backend is None

    def usable(self):
        """The backend, for scoring here.

        Raises:
            ValueError: the classifier is closed, or was loaded in another process of which this one is a fork.
        """
        if self.closed:
            raise ValueError(CLOSED)
        if os.getpid() != self.pid:
            raise ValueError(f"this Classifier was loaded in process {self.pid} and cannot score in process {os.getpid()}, "
                             f"a fork of it (its engine's threads are not there: it would hang); {IN_EACH_PROCESS}")
        return self.backend

    def __reduce__(self):
        raise TypeError(f"a Classifier is not copied or pickled (its engine is native code, its threads this process's); {IN_EACH_PROCESS}")

    def __call__(self, batch: FrameBatch) -> FrameScores:
        return self.submit(batch).result()

    def submit(self, batch: FrameBatch) -> "PendingScores":
        """Start scoring ``batch``; ``result()`` gives its :class:`FrameScores`. On a CUDA backend this
        returns while the device works (the pipeline reads the next batch meanwhile); elsewhere the
        scores are computed before it returns. ``batch.data`` may be reused once it returns."""
        if not isinstance(batch, FrameBatch):  # QA 58 #7: an array gave "'numpy.ndarray' object has no attribute 'frame_index'"
            raise ValueError(f"a Classifier scores a FrameBatch(data, frame_index, pts_seconds), got {type(batch).__name__}")
        batch.check()  # as built, or changed since (QA 116 #1)
        backend, size = self.usable(), self.config.input_size
        # every backend alike (QA 68 #7: torch scored 112 px frames, other scores, where ONNX refused them); a model that
        # finds the field of view takes frames at twice its size, any shape, and crops them itself (on ONNX: ViewCropped)
        if batch.data.shape[1:3] != (size, size) and self.config.border != "fov":
            raise ValueError(f"{backend.name} takes {size}x{size} frames (read with short_side={size}), got {batch.data.shape[1:3]}")
        # one layout for every backend (QA 58 #5: a reversed-channel view was PyTorch's negative-stride error on torch only),
        # writable (QA 105 #4, rev96 #8: a read-only array, np.load's mmap or Arrow's buffers, made torch.from_numpy warn)
        frames = np.require(batch.data, requirements=("C", "W"))
        return PendingScores(backend.submit(frames), batch.frame_index, batch.pts_seconds, backend.name)

    def describe(self) -> dict:
        backend = self.usable()
        return {
            "name": self.config.name or self.config.architecture,
            "architecture": self.config.architecture,
            "weights_sha256": self.weights_id,
            "weights_path": self.weights_path,
            "intended_use": self.intended_use,
            "device": self.device,
            "backend": backend.name,
            "precision": backend.precision,
            "backend_selection": self.selection,
            "threads": inference_threads(backend) or "default (one per core)",  # QA 32: "default" while torch ran on 1
            "batch_size": self.batch_size,  # frames per call: run size x streams
            "streams": getattr(backend, "streams", 1),  # QA 102 #7: threads 1, batch_size 2 hid two streams of runs of 1
            # rev95 #7: frames per run (None: a call is one run), also where no tuning set it (TensorRT's 32)
            "run_size": getattr(backend, "run_size", getattr(backend, "batch_size", None)),
        }


@dataclass
class PendingScores:
    """A batch submitted to the backend: ``result()`` waits for its logits (see :meth:`Classifier.submit`)."""

    logits: "Done"
    frame_index: np.ndarray
    pts_seconds: np.ndarray
    backend: str = ""

    def result(self) -> FrameScores:
        logits = self.logits.result()
        finite = np.isfinite(logits).all(axis=1)
        if not finite.all():  # rev90 #12: ranking's "probs must be finite" after the whole study, naming nothing
            bad = self.frame_index[~finite]
            why = ("fp32 too: weights holding NaN or infinity?" if self.backend.endswith("fp32") else  # rev91 #3: not auto,
                   f"{self.backend.rpartition('-')[2]} arithmetic: run with --backend torch-fp32, or ort-fp32 beside its "
                   "ONNX files")  # which may take this very backend again
            raise WeightsError(self.backend or "backend", f"scored {len(bad)} frame(s) of a batch as NaN or infinity, the first frame "
                                                          f"{int(bad[0])} ({why})")
        return FrameScores(probs=softmax(logits), frame_index=self.frame_index, pts_seconds=self.pts_seconds)


def _check_threads(threads) -> int | None:
    """``threads`` as an int (numpy's too), or ValueError naming it (QA 58 #6)."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1):
        raise ValueError(f"threads must be a whole number >= 1 or None (as triage optimize tuned it), got {threads!r}")
    return None if threads is None else int(threads)


def noted(selection: dict, warning: str | None) -> dict:
    """``selection`` with ``warning`` added to the warnings it carries into run.json and onto stderr."""
    return {**selection, "warnings": [*selection.get("warnings", []), warning]} if warning else selection
