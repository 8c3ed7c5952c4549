"""capsule_triage: triage capsule-endoscopy video with a transfer-learned CNN.

Research use only, not a diagnostic device.
"""

__version__ = "0.1.0"

from .classifier import Classifier, FrameScores  # noqa: E402
from .errors import InputError, OutputError, PresetError, TriageError, WeightsError  # noqa: E402
from .frames import DecodeStats, FrameBatch, SourceInfo  # noqa: E402
from .model_config import ModelConfig  # noqa: E402
from .pipeline import RunOptions, StudyResult, load_classifier, triage_study  # noqa: E402
from .presets import Pipeline, load_pipeline  # noqa: E402
from .ranking import Event, RankParams, Ranking, rank  # noqa: E402
from .reader import ReadOptions, probe, read_frames  # noqa: E402

__all__ = [
    "Classifier", "FrameScores", "InputError", "OutputError", "PresetError", "TriageError", "WeightsError",
    "DecodeStats", "FrameBatch", "SourceInfo", "ModelConfig", "RunOptions", "StudyResult", "load_classifier",
    "triage_study", "Pipeline", "load_pipeline", "Event", "RankParams", "Ranking", "rank", "ReadOptions", "probe",
    "read_frames",
]
