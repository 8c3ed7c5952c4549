"""One table of every study of a batch as one Arrow table: ``batch_table(OUT_DIR, "events")``.

A batch writes each study's tables into its own folder (``OUT_DIR/<study-id>/frames.parquet`` ...): no row names its
study, and a frame folder's tables have one more column than a video's (``source_file``, ``peak_file``, ``file``), so
``pyarrow.dataset`` over them takes the first file's schema and drops or nulls the other's (QA 70 #2). This reads the
studies ``studies.parquet`` lists with complete results, puts ``study_id`` and ``input_path`` first and unifies the
schemas (a video's rows get null file names, and so does a night of videos only: the columns do not change from one
night to the next).
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import InputError, path_argument
from ..json_files import read_json
from ..outputs import EVENTS_FILE, FRAMES_FILE, RUN_FILE, TOP_FRAMES_FILE
from ..report_batch import DONE_STATUSES
from ..result_tables import events_table, top_frames_table
from .layout import SUMMARY_FILE

TABLES = {"frames": FRAMES_FILE, "events": EVENTS_FILE, "top_frames": TOP_FRAMES_FILE}
FILE_COLUMNS = {"frames": "source_file", "events": "peak_file", "top_frames": "file"}  # a frame folder's image names, last
MID_RUN = (f": a batch changed the folder after its {SUMMARY_FILE} was written (it is running, or was stopped before its end); "
           "read it when a run of `triage batch` has ended")


def batch_table(out_dir: str | Path, table: str = "events") -> pa.Table:
    """``table`` ("frames", "events" or "top_frames") of every study of the batch in ``out_dir`` (or the path of its
    studies.parquet) with complete results (studies.parquet status ok, skipped or reused), in studies.parquet's order,
    with ``study_id`` and ``input_path`` (relative to the batch's input folder) as its first columns; with none, only
    those two and (events, top_frames) the table's own. The schema metadata is studies.parquet's.

    Raises:
        ValueError: another table name.
        InputError: no studies.parquet in ``out_dir``, or a study's table cannot be read or was made from other input bytes
            than studies.parquet lists for it (QA 95 #1: a night running, or killed, installs each study as it is done and
            writes the summary at its end: the tables of tonight's bytes were joined to last night's rows), or with another
            pipeline than studies.parquet's (QA 103 #2: a night that changed the preset, killed, left studies of both).
    """
    if table not in TABLES:
        raise ValueError(f"table must be one of {', '.join(TABLES)}, got {table!r}")
    out_dir = path_argument(out_dir, "out_dir")  # (QA 78 #6: an int was pathlib's TypeError)
    if out_dir.name == SUMMARY_FILE and out_dir.is_file():  # QA 116 #8: studies.parquet itself was "no studies.parquet"
        out_dir = Path(os.path.realpath(out_dir)).parent  # (rev105 #8: a link to it kept elsewhere: the batch's folder)
    summary = out_dir / SUMMARY_FILE
    if not summary.is_file():
        raise InputError(out_dir, f"no {SUMMARY_FILE}: not the output folder of a finished `triage batch`")
    studies = pq.read_table(summary)
    prints = [v.decode() for k, v in (studies.schema.metadata or {}).items() if k in (b"pipeline_fingerprint", b"video_pipeline_fingerprint")]
    parts = []
    for row in studies.select(["study_id", "input_path", "status", "output_dir", "input_sha256"]).to_pylist():
        if row["status"] not in DONE_STATUSES:
            continue
        path = out_dir / row["output_dir"] / TABLES[table]
        try:
            part = pq.read_table(path)
        except (OSError, pa.ArrowException) as exc:  # gone: moved aside by an install the night did not finish (QA 95 #2)
            missing = MID_RUN if isinstance(exc, FileNotFoundError) else ""  # (rev89 #4: not a damaged file's or a permission's)
            raise InputError(path, f"cannot read it ({str(exc).splitlines()[0][:160]}){missing}") from None
        made_of = (part.schema.metadata or {}).get(b"input_sha256", b"").decode()
        if made_of != row["input_sha256"]:
            raise InputError(path, f"made from input {made_of[:12] or '(not recorded)'}, where {SUMMARY_FILE} lists "
                                   f"{(row['input_sha256'] or '(none)')[:12]} for {row['study_id']}{MID_RUN}")
        if prints and (made_with := _pipeline_print(out_dir / row["output_dir"] / RUN_FILE)) not in prints:
            raise InputError(path, f"made with pipeline {made_with[:12] or '(not recorded)'}, where {SUMMARY_FILE} lists the "
                                   f"studies of pipeline {' or '.join(p[:12] for p in prints)}{MID_RUN}")
        named = {"study_id": row["study_id"], "input_path": row["input_path"]}
        for i, (name, value) in enumerate(named.items()):
            part = part.add_column(i, name, pa.array([value] * part.num_rows, pa.string()))
        parts.append(part.replace_schema_metadata(None))
    # QA 100 #2: the columns are the same every night, so that nights append: a night without a frame folder still has
    # its file column (null), one without results the table's own columns (frames: the names only, as its columns
    # depend on the model's classes)
    if not parts:
        own = {"events": events_table([], {}, files=[]), "top_frames": top_frames_table([], {}, files=[])}.get(table, {})
        return pa.table({"study_id": pa.array([], pa.string()), "input_path": pa.array([], pa.string()), **own},
                        metadata=studies.schema.metadata)
    joined = pa.concat_tables(parts, promote_options="default")
    if FILE_COLUMNS[table] not in joined.column_names:
        joined = joined.append_column(FILE_COLUMNS[table], pa.nulls(joined.num_rows, pa.string()))
    return joined.replace_schema_metadata(studies.schema.metadata)


def _pipeline_print(run_file: Path) -> str:
    """The pipeline fingerprint a study's run.json records it was made with; "" when it records none or cannot be read."""
    try:
        run = read_json(run_file)
        return str(run["batch"]["pipeline_fingerprint"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""
