"""A stand-in for the batch's per-study function in its spawned worker processes (which import it by this name):
studies that take a given time, and one that kills its worker, with no model to load (tests/test_batch.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from capsule_triage.batch.worker import StudyOutcome


def run(study):
    """``<kind>-<seconds>``: log the run, wait, then return ``ok`` or, for kind ``dies`` (``diesonce``: unless the marker
    is there), leave a marker and ``os._exit`` the worker (a kill -9, the OOM killer)."""
    folder = Path(study.path).parent
    with open(folder / "runs.log", "a") as fh:
        fh.write(f"{study.study_id}\n")
    kind, seconds = study.study_id.split("-")
    time.sleep(float(seconds))
    if kind == "dies" or (kind == "diesonce" and not (folder / "died").exists()):
        (folder / "died").touch()
        os._exit(9)
    return StudyOutcome(study, "ok")
