"""run.json's record of one triaged study: its input, source, model, parameters, what the read met, and where the time
went (written by :func:`~capsule_triage.pipeline.triage_study`; README "run.json" lists the fields)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from .bitrate import bits_per_model_pixel, bits_per_pixel
from .completeness import measured_rate, time_gaps
from .cpu_info import host_record
from .folder_times import timestamps_origin
from .frames import SourceInfo
from .periods import timeline_seconds
from .versions import package_versions


def run_parameters(input_path, info, read, params, options, own_unused) -> dict:
    """run.json's ``parameters``: the ranking, how the frames were read and timed, duplicate skipping (the tables carry
    their digest, :func:`~capsule_triage.result_tables.table_provenance`)."""
    unused = ("folder_fps", "timestamps_csv") if info.kind != "frames" else ("folder_fps",) if read.timestamps_csv else ()
    read_record = {k: str(Path(v).absolute()) if isinstance(v, Path) else v for k, v in asdict(read).items()  # a video's times
                   if k != "own_timestamps" and k not in unused}  # are its own; a CSV's are read at no rate (QA 80 #6)
    if info.kind == "frames" and read.timestamps_csv is None:  # where the rate came from (the review page says it)
        read_record["folder_fps_from"] = "--fps" if options.folder_fps is not None else "preset"
    elif info.kind == "frames":
        read_record["timestamps_from"] = timestamps_origin(read.timestamps_csv, input_path, options.timestamps_csv)
    if info.kind == "frames" and own_unused:  # the folder's own CSV, found and passed over: why (the batch counts them)
        read_record["own_timestamps_unused"] = own_unused
    return {"rank": asdict(params), "read": read_record, "skip_duplicates": options.skip_duplicates}


def study_span(pts: np.ndarray, info: SourceInfo) -> float | None:
    """The study's duration (:func:`timeline_seconds`); one frame lasts the period the ranking gives it (QA 70 #4: null,
    beside an event of that one frame lasting 0.5 s)."""
    span = timeline_seconds(pts)
    return span if span is not None or len(pts) != 1 or not info.average_fps else 1.0 / info.average_fps


def run_record(input_path, info, input_sha, pipeline, classifier, parameters, stats, ranking, wall, decoded_in,
                options, stage_seconds, pts, view) -> dict:
    n = stats.frames_decoded
    scoring = stage_seconds["decode_and_score"]
    return {
        "schema_version": "1",
        "input": {"path": str(input_path.absolute()), "size_bytes": info.size_bytes, "sha256": input_sha},
        "source": {**info.to_dict(), "path": str(input_path.absolute())},  # as input.path, not as typed
        "command": options.command,  # QA 52: with the preset's own bytes, what a re-run needs (the library: None)
        "pipeline": {"name": pipeline.name, "source": str(Path(pipeline.source).absolute()), "sha256": pipeline.sha256},
        "model": {**classifier.describe(), "config": classifier.config.to_dict()},
        "parameters": parameters,
        "frames_decoded": n,
        "duration_seconds": None if (span := study_span(pts, info)) is None else round(span, 3),  # source's is the container's
        "bits_per_pixel": None if (bpp := bits_per_pixel(info, stats)) is None else round(bpp, 4),  # per frame, video packets
        "bits_per_model_pixel": None if (seen := bits_per_model_pixel(info, stats, classifier.config.input_size)) is None else round(seen, 4),
        "frames_skipped": stats.frames_skipped,
        "frames_hidden_by_edit_list": stats.frames_hidden_by_edit_list,
        "frames_turned_clockwise_degrees": stats.turned_degrees,  # by the display matrix, upright as a player shows them
        "ticks_without_frame": stats.ticks_without_frame,  # an AVI's empty chunks: no frame was lost for them (QA 87 #2)
        "frames_mirrored": stats.mirrored,  # by the display matrix too, after the turn ("left to right", "top to bottom")
        "frames_reused_as_duplicates": stats.frames_reused,
        "frames_without_view": int((~view).sum()),  # NO_VIEW_KINDS: not scored
        "time_gaps": time_gaps(pts),
        "frame_rate": measured_rate(pts),  # from the frames' times (source.average_fps is the header's, maybe nominal)
        "decoded_in": decoded_in,
        "decoder_processes": options.decoder_processes,
        "decoder_peak_rss_mb": round(stats.decoder_peak_rss_mb, 1) if decoded_in == "process" else None,  # QA 63 #7: 0.0 unmeasured
        "decode_errors": stats.errors,
        "colour_profiles_converted": stats.colour_profiles,  # a frame folder's images' own, converted to sRGB
        "image_sizes": stats.image_sizes or None,  # images or frames by size as stored (QA 77 #11, 87 #4); null: none decoded
        "events": len(ranking.events),
        "flagged_frames": int((ranking.event_id >= 0).sum()),
        "wall_seconds": round(wall, 3),
        "fps": round(n / wall, 2) if wall > 0 else 0.0,
        # Where the wall time went: the decode-and-score stream grows with the study; thumbnails (a seek and
        # a decode from the keyframe before each event peak and top frame) and the rest are per study.
        "stage_seconds": {k: round(v, 3) for k, v in stage_seconds.items()},
        "scoring_fps": round(n / scoring, 2) if scoring > 0 else 0.0,
        "versions": package_versions(),
        "host": host_record(),
    }
