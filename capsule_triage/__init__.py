"""capsule_triage: triage capsule-endoscopy video with a transfer-learned CNN.

Research use only, not a diagnostic device.

The public names below are imported on first use (PEP 562), so that a process that needs one
module, such as the decoder process (:mod:`capsule_triage.reader_process`), does not load the
rest (pyarrow, the model code): ~70 MB less memory per decoder process.
"""

from __future__ import annotations

import importlib
import os
import sys

__version__ = "0.1.1"

# An image of more pixels is not decoded (a decompression bomb: QA 48, a 1.2 MB PNG of 400 MP took 2.5 GB). OpenCV reads
# this variable once, when cv2 is first imported (hence here, before any module imports it); a user's own setting wins.
MAX_FRAME_PIXELS = 100_000_000
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_FRAME_PIXELS))

_PUBLIC = {  # name -> module that defines it
    "Classifier": "classifier", "FrameScores": "classifier", "batch_table": "batch.tables",
    "DataWarning": "errors", "DeviceError": "errors", "InputError": "errors", "OutputError": "errors", "PresetError": "errors", "TriageError": "errors", "WeightsError": "errors",
    "DecodeStats": "frames", "FrameBatch": "frames", "SourceInfo": "frames",
    "ModelConfig": "model_config", "has_view": "field_of_view",
    "RunOptions": "run_options", "StudyResult": "pipeline", "load_classifier": "pipeline", "triage_study": "pipeline",
    "Pipeline": "presets", "load_pipeline": "presets",
    "Event": "ranking", "RankParams": "ranking", "Ranking": "ranking", "rank": "ranking",
    "ReadOptions": "read_options", "probe": "reader", "read_frames": "reader",
}
__all__ = list(_PUBLIC)


def _lazy_getattr(package: str, public: dict[str, str]):
    """A package's ``__getattr__`` (PEP 562): each public name imported from its module on first use, then kept."""
    def __getattr__(name: str):
        if name not in public:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{public[name]}", package), name)
        setattr(sys.modules[package], name, value)
        return value
    return __getattr__


__getattr__ = _lazy_getattr(__name__, _PUBLIC)


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})  # a public name used once is in both (QA 32: listed twice)
