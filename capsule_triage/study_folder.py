"""A study folder as ``triage run`` writes it, read back for the pages: ``load_study`` gives a
:class:`Study` (run.json, the frames and events tables, the thumbnails that are safely inside it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import quote

import numpy as np
import pyarrow.parquet as pq

from .json_files import read_json
from .errors import InputError
from .outputs import EVENTS_FILE, FRAMES_FILE, RUN_FILE, TOP_FRAMES_FILE


@dataclass
class Study:
    """What a study folder holds, loaded for the report."""

    out_dir: Path
    run: dict  # run.json
    frames: dict[str, np.ndarray]  # frames.parquet columns (frame_index, pts_seconds, score, smoothed_score, event_id, flagged, prob_*)
    prob_columns: list[str]  # the prob_<class> columns, in file order
    events: list[dict]  # events.parquet rows in rank order
    thumbs: dict[int, str]  # frame_index -> URL of its thumbnail, relative to out_dir (checked to exist inside it)
    top_frames: list[dict] = field(default_factory=list)  # top_frames.parquet rows in rank order

    def frame(self, index) -> str:
        """'frame N', with its image's name for a frame folder (QA 34: the reviewer had to count to the file)."""
        names = self.frames.get("source_file")
        at = np.flatnonzero(self.frames["frame_index"] == index) if names is not None and index is not None else []
        return f"frame {index}" + (f", {names[at[0]]}" if len(at) else "")


def _run_problem(run) -> str | None:
    """What makes a parsed run.json unusable for the page (its sections must be JSON objects)."""
    if not isinstance(run, dict):
        return f"a JSON object is expected, got {type(run).__name__}"
    for section, keys in (("model", ("config",)), ("parameters", ("rank",)), ("source", ()), ("input", ())):
        value = run.get(section, {})
        if not isinstance(value, dict):
            return f"{section} must be an object, got {value!r:.40}"
        for key in keys:
            if not isinstance(value.get(key, {}), dict):
                return f"{section}.{key} must be an object, got {value[key]!r:.40}"
    return None


def load_study(out_dir: Path) -> Study:
    """Read run.json, frames.parquet, events.parquet and top_frames.parquet of a study folder.

    Raises:
        InputError: not a study folder, or a file that cannot be read.
    """
    out_dir = Path(out_dir)
    if not (out_dir / RUN_FILE).is_file():
        raise InputError(out_dir, f"not a study folder ({RUN_FILE} not found)")
    try:
        run = read_json(out_dir / RUN_FILE)
    except (OSError, ValueError) as exc:
        raise InputError(out_dir / RUN_FILE, f"cannot read ({exc})") from None
    problem = _run_problem(run)
    if problem:
        raise InputError(out_dir / RUN_FILE, f"not a run.json of `triage run` ({problem})")
    table = read_parquet(out_dir / FRAMES_FILE)
    frames = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
    n = table.num_rows
    frames.setdefault("frame_index", np.arange(n))
    if "pts_seconds" not in frames:
        raise InputError(out_dir / FRAMES_FILE, "column pts_seconds missing")
    frames.setdefault("score", np.zeros(n, np.float32))
    frames.setdefault("smoothed_score", frames["score"])
    frames.setdefault("event_id", np.full(n, -1, np.int32))
    frames.setdefault("flagged", frames["event_id"] >= 0)
    events = read_parquet(out_dir / EVENTS_FILE).to_pylist()
    events.sort(key=lambda e: e.get("rank", 0))
    thumbs = {}
    extra = read_parquet(out_dir / TOP_FRAMES_FILE).to_pylist() if (out_dir / TOP_FRAMES_FILE).exists() else []
    for frame, rel in [(r.get("frame_index"), r.get("thumbnail")) for r in extra] + [(e.get("peak_frame"), e.get("thumbnail")) for e in events]:
        url = safe_relpath(rel, out_dir)
        if url and frame is not None:
            thumbs[int(frame)] = url
    extra.sort(key=lambda r: r.get("rank", 0))
    return Study(out_dir, run, frames, [c for c in table.column_names if c.startswith("prob_")], events, thumbs, extra)


def read_parquet(path: Path):
    """A Parquet table of a study or batch folder; InputError naming the file if it is missing or damaged."""
    try:
        with open(path, "rb") as fh:  # a file object: pyarrow wants UTF-8 paths, input names may not be
            return pq.read_table(fh, use_threads=False)
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise InputError(path, f"cannot read Parquet ({exc})") from None


def safe_relpath(rel: str | None, root: Path) -> str | None:
    """``rel`` as a URL if it names an existing file inside ``root`` (no absolute path, ``..`` or scheme)."""
    if not rel or not isinstance(rel, str) or "\\" in rel or ":" in rel:
        return None
    path = PurePosixPath(rel)
    if path.is_absolute() or ".." in path.parts or not (root / path).is_file():
        return None
    return quote(path.as_posix(), safe="/")
