"""capsule_triage as a Python library (QA 58: a research engineer scoring frames in a notebook): the loop a
user writes from the public names gives what `triage run` gives, misuse is one specific error, and a
classifier can be closed."""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import signal
import threading
import time
import warnings
from dataclasses import replace

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

import capsule_triage as ct
from capsule_triage.pipeline import model_read_options
from conftest import DEMO_CLIP, REPO, WCE, encode_clip, needs_shared, write_frame_folder


@pytest.fixture(scope="module")
def default(shipped_weights):
    pipeline = ct.load_pipeline("capsule-bleeding")
    return pipeline, ct.load_classifier(pipeline, weights=shipped_weights)


@pytest.fixture(scope="module")
def clip_with_black_frames(tmp_path_factory):
    """The demo clip with frames 8-15 black (the scope not yet in): a run gives them no score."""
    with av.open(str(DEMO_CLIP)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    frames[8:16] = [np.zeros_like(frames[0])] * 8
    return encode_clip(frames, tmp_path_factory.mktemp("black") / "black.mp4")


def test_scoring_frames_yourself_gives_the_events_of_a_run(default, clip_with_black_frames, tmp_path):
    """QA 58 #1: a classifier scores a black frame as it scores any (0.80 with the shipped model, above its
    threshold); `has_view` is public, and the README's loop with it gives triage_study's scores and events."""
    pipeline, classifier = default
    read = model_read_options(pipeline.read, classifier, ct.RunOptions())
    batches = list(ct.read_frames(clip_with_black_frames, read))
    scores = [classifier(batch) for batch in batches]
    view = np.concatenate([ct.has_view(batch.data) for batch in batches])
    probs = np.concatenate([s.probs for s in scores])
    assert not view[8:16].any() and view[:8].all() and view[16:].all()
    raw = probs[8:16, classifier.config.abnormal_indices].sum(axis=1)
    assert (raw >= classifier.config.threshold).all()  # why has_view is needed: the model flags black frames

    own = _readme_loop(pipeline, classifier, clip_with_black_frames)
    assert np.array_equal(own.scores[view], probs[view][:, classifier.config.abnormal_indices].sum(axis=1))
    result = ct.triage_study(clip_with_black_frames, pipeline, classifier, ct.RunOptions(out=tmp_path / "run"))
    events = pq.read_table(result.out_dir / "events.parquet").to_pylist()
    assert [(e.start_frame, e.end_frame, e.peak_frame) for e in own.events] == \
        [(e["start_frame"], e["end_frame"], e["peak_frame"]) for e in events] and events
    frames = pq.read_table(result.out_dir / "frames.parquet")
    assert frames["has_view"].to_pylist() == view.tolist()
    np.testing.assert_allclose(np.array(frames["score"].to_pylist(), dtype=float), own.scores, equal_nan=True)


def _readme_loop(pipeline, classifier, video):
    """README's "Scoring frames yourself" code, run as written on ``video``; its ``ranking``."""
    readme = (REPO / "README.md").read_text()
    code = readme.split("Scoring frames yourself", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert '"study.mp4"' in code
    namespace = {"pipeline": pipeline, "classifier": classifier}  # what the README's first example made; the rest it imports
    exec(code.replace('"study.mp4"', repr(str(video))), namespace)
    return namespace["ranking"]


def test_the_readme_loop_ranks_a_folder_whose_timestamps_order_its_frames_otherwise_than_their_names(default, tmp_path):
    """rev53: a frame folder's own timestamps.csv may put IMG_0000 after IMG_9999 (a counter that wrapped): the
    README's loop sorts by time, as triage_study does, and gives its events."""
    pipeline, classifier = default
    with av.open(str(DEMO_CLIP)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    folder = write_frame_folder(frames, tmp_path / "wrapped", pattern="IMG_{:04d}")
    times = [(i + 32) % 64 / 4 for i in range(64)]  # names 0-31 were taken last
    (folder / "timestamps.csv").write_text("filename,pts_seconds\n" + "".join(f"IMG_{i:04d}.png,{t}\n" for i, t in enumerate(times)))
    own = _readme_loop(pipeline, classifier, folder)
    result = ct.triage_study(folder, pipeline, classifier, ct.RunOptions(out=tmp_path / "run", report=False))
    events = pq.read_table(result.out_dir / "events.parquet").to_pylist()
    assert result.run["parameters"]["read"]["timestamps_from"] == "folder" and events
    assert [(e.start_frame, e.end_frame, e.peak_frame, e.start_seconds) for e in own.events] == \
        [(e["start_frame"], e["end_frame"], e["peak_frame"], e["start_seconds"]) for e in events]


def test_a_results_warning_lines_are_those_the_cli_prints(default, tmp_path):
    """QA 78 #2: run["warnings"] misses a study's time gaps, its frames not decoded and what a folder left unread, which
    `triage run` prints from other run.json fields: StudyResult.warning_lines() gives them all."""
    pipeline, classifier = default
    with av.open(str(DEMO_CLIP)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)][:8]
    folder = write_frame_folder(frames, tmp_path / "study")
    (folder / "frame3.png").write_bytes(b"not a png")
    times = [i / 2 + (10 if i > 4 else 0) for i in range(8)]  # 10 s without frames after the fifth
    (folder / "timestamps.csv").write_text("filename,pts_seconds\n" + "".join(f"frame{i}.png,{t}\n" for i, t in enumerate(times)))
    write_frame_folder(frames[:2], folder / "more")
    result = ct.triage_study(folder, pipeline, classifier, ct.RunOptions(out=tmp_path / "run", report=False))
    lines = result.warning_lines()
    assert result.run["warnings"] == lines[3:] and [line.split(": ", 1)[1].split(" ")[0:2] for line in lines[:3]] == [
        ["1", "stretch"], ["1", "frame"], ["not", "read:"]], lines
    assert all(line.startswith(f"{folder.absolute()}: ") for line in lines[:3])


@needs_shared
def test_the_readme_loop_gives_a_one_frame_study_its_event(default, tmp_path):
    """QA 78 #5: without the frame's period the loop gave a one-image folder no event (its one frame lasting 0 s, under
    min_event_seconds), where triage_study, passing 1 / average_fps, gives it one."""
    pipeline, classifier = default
    bleeding = sorted((WCE / "test" / "bleeding").glob("*.png"))
    folder = tmp_path / "one"
    folder.mkdir()
    (folder / "frame_1.png").write_bytes(bleeding[0].read_bytes())
    own = _readme_loop(pipeline, classifier, folder)
    result = ct.triage_study(folder, pipeline, classifier, ct.RunOptions(out=tmp_path / "run", report=False))
    events = pq.read_table(result.out_dir / "events.parquet").to_pylist()
    assert events and [(e.start_frame, e.duration_seconds) for e in own.events] == [(e["start_frame"], e["duration_seconds"]) for e in events]


def test_every_backend_refuses_frames_of_another_size(random_weights):
    """QA 68 #7: torch scored 32 px frames for a 64 px model (other scores) where the ONNX engines refused them: the same
    notebook code worked or failed by what --backend auto chose."""
    with ct.Classifier.load(random_weights, backend="torch-fp32", device="cpu") as classifier:
        frames = np.zeros((2, 32, 32, 3), np.uint8)
        with pytest.raises(ValueError, match=r"^torch-fp32 takes 64x64 frames \(read with short_side=64\), got \(32, 32\)$"):
            classifier(ct.FrameBatch(frames, np.arange(2), np.arange(2) / 2.0))
        assert classifier(ct.FrameBatch(np.zeros((2, 64, 64, 3), np.uint8), np.arange(2), np.arange(2) / 2.0)).probs.shape == (2, 2)


def test_rank_refuses_frame_indices_given_where_times_go(default):
    """QA 58 #2: FrameBatch takes (data, frame_index, pts_seconds), rank (pts_seconds, frame_index, ...): swapped,
    rank found events 12 s long with a time as their peak frame, without a word."""
    pipeline, classifier = default
    config = classifier.config
    pts, index = np.arange(40) / 4.0, np.arange(40)
    probs = np.tile([0.1, 0.9], (40, 1)).astype(np.float32)
    with pytest.raises(ValueError, match=r"^frame_index must be an integer array \(int64\), got float64: rank takes \(pts_seconds, frame_index"):
        ct.rank(index, pts, probs, config.class_names, config.abnormal_indices, pipeline.rank_params(config))
    assert len(ct.rank(pts, index, probs, config.class_names, config.abnormal_indices, pipeline.rank_params(config)).events) == 1
    empty = ct.rank(np.zeros(0), [], np.zeros((0, 2), np.float32), config.class_names, config.abnormal_indices, pipeline.rank_params(config))
    assert empty.events == []  # an empty list is no float array (rev53)
    for params, said in ((None, "NoneType"), ({"enter_threshold": 0.5}, "dict")):  # QA 68 #11: AttributeError
        with pytest.raises(ValueError, match=rf"^params must be a RankParams \(pipeline.rank_params\(config\)\), got {said}$"):
            ct.rank(pts, index, probs, config.class_names, config.abnormal_indices, params)
    for indices in (["bleeding"], "1", [True], 1):  # ['bleeding']: int()'s "invalid literal"
        with pytest.raises(ValueError, match=r"^abnormal_indices must be class positions \(whole numbers: config.abnormal_indices\), got "):
            ct.rank(pts, index, probs, config.class_names, indices, pipeline.rank_params(config))
    with pytest.raises(ValueError, match=r"^abnormal_indices \[1, 1\] name a class twice$"):  # QA 116 #5: scores up to 1.8
        ct.rank(pts, index, probs, config.class_names, [1, 1], pipeline.rank_params(config))
    for indices in (np.array([1]), (i for i in [1])):  # rev64: a generator, read by the check, then scored nothing
        ranked = ct.rank(pts, index, probs, config.class_names, indices, pipeline.rank_params(config))
        assert len(ranked.events) == 1 and ranked.scores.max() == pytest.approx(0.9)
    from capsule_triage.pipeline import model_read_options

    with pytest.raises(ValueError, match=r"^base must be a ReadOptions \(pipeline.read\), got Pipeline$"):
        model_read_options(pipeline, classifier, ct.RunOptions())
    with pytest.raises(ValueError, match=r"^has_view takes uint8 frames \[N,H,W,3\] or a FrameBatch, got float32 \(2, 8, 8, 3\)$"):
        ct.has_view(np.zeros((2, 8, 8, 3), np.float32))
    assert ct.has_view(ct.FrameBatch(np.zeros((2, 8, 8, 3), np.uint8), np.arange(2), np.zeros(2))).tolist() == [False, False]
    args = (config.class_names, config.abnormal_indices, pipeline.rank_params(config))  # QA 78 #3, #4: accepted before
    with pytest.raises(ValueError, match=r"^probs must be class probabilities in \[0, 1\] \(a softmax of the logits\), got values from -3 to 5$"):
        ct.rank(pts, index, np.tile([-3.0, 5.0], (40, 1)), *args)  # logits: ranked against probability thresholds
    for period in (-1.0, float("inf"), float("nan"), 0.0):  # an event dropped, or of infinite duration
        with pytest.raises(ValueError, match=r"^frame_period must be a frame's duration in seconds, finite and > 0 \(or None\), got "):
            ct.rank(pts, index, probs, *args, frame_period=period)
    with pytest.raises(ValueError, match=r"^has_view must have shape \[40\] \(like pts_seconds\), got \(3,\)$"):
        ct.rank(pts, index, probs, *args, has_view=np.ones(3, bool))  # (all True: not checked)
    assert len(ct.rank(pts, index, probs, *args, frame_period=0.25, has_view=np.ones(40, bool)).events) == 1


def test_read_frames_and_probe_time_a_folder_by_its_own_timestamps_as_a_run_does(default, tmp_path):
    """QA 58 #3: read_frames and probe read a folder with its own timestamps.csv at 2 frames/s (0, 0.5, ...) while
    triage_study took the CSV's times (100, 103, ...)."""
    frames = [np.full((64, 64, 3), (150 + 10 * i, 60, 50), np.uint8) for i in range(6)]
    folder = write_frame_folder(frames, tmp_path / "timed")
    (folder / "timestamps.csv").write_text("filename,pts_seconds\n" + "".join(f"frame{i}.png,{100 + 3 * i}\n" for i in range(6)))
    times = np.concatenate([b.pts_seconds for b in ct.read_frames(folder)])
    assert times.tolist() == [100.0, 103.0, 106.0, 109.0, 112.0, 115.0]
    assert ct.probe(folder).duration_seconds == 15.0 and ct.probe(folder).average_fps is None
    at_rate = ct.ReadOptions(own_timestamps=False)  # what `--fps` does
    assert np.concatenate([b.pts_seconds for b in ct.read_frames(folder, at_rate)]).tolist() == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    # rev53: a library's pipeline that turns them off is read at its rate, and run.json says so
    pipeline, classifier = default
    untimed = replace(pipeline, read=replace(pipeline.read, own_timestamps=False))
    result = ct.triage_study(folder, untimed, classifier, ct.RunOptions(out=tmp_path / "run", report=False))
    assert pq.read_table(result.out_dir / "frames.parquet")["pts_seconds"].to_pylist() == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert "timestamps_from" not in result.run["parameters"]["read"] and "own_timestamps" not in result.run["parameters"]["read"]


@pytest.mark.parametrize("options, message", [
    (ct.ReadOptions(batch_size=0), "batch_size must be a whole number >= 1, got 0"),
    (ct.ReadOptions(batch_size=2.5), "batch_size must be a whole number >= 1, got 2.5"),
    (ct.ReadOptions(short_side=0), "short_side must be a whole number >= 1 or None, got 0"),
    (ct.ReadOptions(short_side=-5), "short_side must be a whole number >= 1 or None, got -5"),
    (ct.ReadOptions(square_crop="yes"), "square_crop must be True or False, got 'yes'"),
    ({"batch_size": 8}, "options must be a ReadOptions, got dict"),
])
def test_read_frames_and_probe_check_their_options_before_reading(options, message):
    """QA 58 #4: batch_size 0 read the whole source as one batch; short_side 0 was 'no decodable frames' of the file."""
    with pytest.raises(ValueError) as error:
        ct.read_frames(DEMO_CLIP, options)  # at the call, not at the first batch
    assert str(error.value) == message
    with pytest.raises(ValueError) as error:
        ct.probe(DEMO_CLIP, options)
    assert str(error.value) == message


def test_read_frames_says_a_missing_or_empty_source_at_the_call(tmp_path):
    """QA 82 #4: `read_frames(missing)` returned a generator and raised at the first batch, so a `try:` around the call
    never caught it, where bad options raise at once."""
    (tmp_path / "empty.mp4").write_bytes(b"")
    for name, problem in (("nope.mp4", "no such file or directory"), ("empty.mp4", "file is empty (0 bytes)")):
        with pytest.raises(ct.InputError) as error:
            ct.read_frames(tmp_path / name)  # no next(): at the call
        assert str(error.value) == f"{tmp_path / name}: {problem}"


def test_numpy_numbers_are_numbers_to_read_options_and_threads(default, tmp_path):
    """rev53: the checks refused np.int64(16) as 'not an integer', where RunOptions takes numpy's numbers."""
    pipeline, classifier = default
    read = ct.ReadOptions(batch_size=np.int64(16), short_side=np.int64(64), folder_fps=np.float32(4))
    assert [len(b) for b in ct.read_frames(DEMO_CLIP, read)] == [16, 16, 16, 16]
    threaded = ct.load_classifier(pipeline, weights=classifier.weights_path, threads=np.int64(1))
    assert threaded.threads == 1 and type(threaded.threads) is int
    folder = write_frame_folder([b.data[0] for b in ct.read_frames(DEMO_CLIP, read)], tmp_path / "f")  # QA 105 #1: a folder's
    for fps in (np.float32(4), np.int64(4)):  # rate as numpy's number passed ReadOptions, then "--fps must be ..., got 4.0"
        assert [b.pts_seconds.tolist() for b in ct.read_frames(folder, replace(read, folder_fps=fps))] == [[0.0, 0.25, 0.5, 0.75]]


def test_time_types_and_other_odd_arguments_are_named_not_taken(default, tmp_path):
    """QA 105 #3, #5, #6: timedelta64 times were read as counts (milliseconds as seconds: events 1,000 times too long);
    a text frame_period, object probs, a generator of class names and a dict as stats were numpy's or Python's own
    errors; has_view of NaN counted as a view."""
    pipeline, classifier = default
    config, params = classifier.config, pipeline.rank_params(classifier.config)
    pts, index = np.arange(40) / 4.0, np.arange(40)
    probs = np.tile([0.1, 0.9], (40, 1)).astype(np.float32)
    args = (config.class_names, config.abnormal_indices, params)
    milliseconds = (np.arange(40) * 250).astype("timedelta64[ms]")
    for call, message in [
            (lambda: ct.rank(milliseconds, index, probs, *args),
             "pts_seconds must be seconds as numbers, got timedelta64[ms] (a time type: divide by np.timedelta64(1, 's'))"),
            (lambda: ct.FrameBatch(np.zeros((2, 8, 8, 3), np.uint8), np.arange(2), milliseconds[:2]),
             "FrameBatch.pts_seconds must be seconds as numbers, got timedelta64[ms] (a time type: divide by np.timedelta64(1, 's'))"),
            (lambda: ct.rank(pts, index, probs, *args, frame_period="0.25"),
             "frame_period must be a frame's duration in seconds, finite and > 0 (or None), got '0.25'"),
            (lambda: ct.rank(milliseconds, index, probs, *args, frame_period=np.timedelta64(250, "ms")),
             "pts_seconds must be seconds as numbers, got timedelta64[ms] (a time type: divide by np.timedelta64(1, 's'))"),
            (lambda: ct.rank(pts, index, probs, *args, frame_period=np.timedelta64(250, "ms")),
             "frame_period must be a frame's duration in seconds, finite and > 0 (or None), got np.timedelta64(250,'ms')"),
            (lambda: ct.rank(index, milliseconds, probs, *args),  # rev96 #5: swapped, with times of a time type
             "frame_index must be an integer array (int64), got timedelta64[ms]: rank takes (pts_seconds, frame_index, probs, ...), times first"),
            (lambda: ct.rank(np.array([datetime.timedelta(seconds=s) for s in pts]), index, probs, *args),
             "pts_seconds must be seconds as numbers, got object (a time type: divide by np.timedelta64(1, 's'))"),
            (lambda: ct.rank(np.datetime64("2026-12-07T08:00") + milliseconds, index, probs, *args),  # rev99 #9: dates
             "pts_seconds must be seconds as numbers, got datetime64[ms] (a time type: subtract the first time, then divide by "
             "np.timedelta64(1, 's'))"),
            (lambda: ct.rank((1.7e9 + pts).astype(np.float32), index, probs, *args),  # QA 116 #4: Unix times in float32
             "pts_seconds in float32 cannot tell times apart by less than 128 s at 1.7e+09 s: give them as float64"),
            (lambda: ct.rank(np.r_[np.nan, 1.7e9 + pts[1:]].astype(np.float32), index, probs, *args),  # rev105 #7: a NaN hid it
             "pts_seconds in float32 cannot tell times apart by less than 128 s at 1.7e+09 s: give them as float64"),
            (lambda: ct.rank(pts, index, probs.astype(object), *args),
             "probs must be class probabilities as numbers (float32), got object"),
            (lambda: ct.rank(pts, index, probs, (name for name in config.class_names), *args[1:]),
             "class_names must be a list of the model's class names, got generator"),
            (lambda: ct.rank(pts, np.r_[index[:20], index[:20]], probs, *args),  # QA 124 #6: accepted, two rows per frame
             "frame_index must name each frame once, got 0 2 times (20 repeated): frames.parquet and the events name frames by it"),
            (lambda: ct.rank(pts, index, probs, *args, has_view=np.full(40, np.nan)),
             "has_view must be True/False per frame, got float64 values other than 0 and 1"),
            (lambda: ct.read_frames(DEMO_CLIP, ct.ReadOptions(), stats={}), "stats must be a DecodeStats (or None), got dict"),
            (lambda: ct.rank(np.array([str(t) for t in pts], dtype=object), index, probs, *args),  # rev97 #7: text is no number
             "pts_seconds must be seconds as numbers (float64), got object"),
            (lambda: ct.rank(pts, index, probs, *args[:2], pipeline.rank),  # rev97 #5: a preset's own, thresholds unset
             "RankParams.enter_threshold is None: left to the model's operating threshold; rank with "
             "pipeline.rank_params(classifier.config)")]:
        with pytest.raises(ValueError) as error:
            call()
        assert str(error.value) == message
    seconds = milliseconds / np.timedelta64(1, "s")  # as the message says
    assert [(e.start_seconds, e.end_seconds) for e in ct.rank(seconds, index, probs, *args).events] == [(0.0, 9.75)]
    # rev96 #3, #4: numbers of other kinds are seconds still (an SQL NUMERIC column's Decimals, a 0-d array)
    from decimal import Decimal

    for times, period in (([Decimal(str(t)) for t in pts], Decimal("0.25")), (pts, np.array(0.25)), (pts, np.float32(0.25))):
        assert [(e.start_seconds, e.end_seconds) for e in ct.rank(times, index, probs, *args, frame_period=period).events] == [(0.0, 9.75)]
    assert len(ct.rank(pts, index, probs, *args, has_view=np.ones(40)).events) == 1  # 0/1 numbers are True/False


def test_thresholds_changed_on_a_loaded_pipeline_are_taken(default, tmp_path):
    """QA 105 #2: `replace(pipeline, rank=replace(pipeline.rank, enter_threshold=0.9, ...))` ranked at the model's
    threshold without a word (run.json said so), where min_event_seconds and top_k changed were taken."""
    pipeline, classifier = default
    changed = replace(pipeline, rank=replace(pipeline.rank, enter_threshold=0.9, leave_threshold=0.7))
    params = changed.rank_params(classifier.config)
    assert (params.enter_threshold, params.leave_threshold) == (0.9, 0.7)
    assert pipeline.rank_params(classifier.config).enter_threshold == classifier.config.threshold  # the loaded one: as before
    only_enter = replace(pipeline, rank=replace(pipeline.rank, enter_threshold=0.6)).rank_params(classifier.config)
    assert only_enter.enter_threshold == 0.6 and only_enter.leave_threshold < 0.6
    ct.triage_study(DEMO_CLIP, changed, classifier, ct.RunOptions(out=tmp_path / "o", report=False, progress=False))
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    assert run["parameters"]["rank"]["enter_threshold"] == 0.9 and run["parameters"]["rank"]["leave_threshold"] == 0.7
    assert pipeline.rank.enter_threshold is None and pipeline.rank.leave_threshold is None  # the preset leaves them to the weights
    for enter in (0.5, 0.35):  # rev96 #1: the values the loaded pipeline held for the preset's [model] threshold were ignored
        swept = replace(pipeline, rank=replace(pipeline.rank, enter_threshold=enter)).rank_params(classifier.config)
        assert swept.enter_threshold == enter and swept.leave_threshold == pytest.approx(0.75 * enter)
    with pytest.raises(ValueError, match=r"^pipeline.rank.leave_threshold 0.3 is above the enter threshold 0.188\d* \(the operating "
                                         r"threshold of the model's config.json\): give a leave_threshold at or below"):
        replace(pipeline, rank=replace(pipeline.rank, leave_threshold=0.3)).rank_params(classifier.config)  # rev96 #6: not the file's
    with pytest.raises(ValueError, match=r"^pipeline.rank.leave_threshold 0.15 is above the enter threshold 0.1 \(set in code\)"):
        replace(pipeline, rank=replace(pipeline.rank, enter_threshold=0.1, leave_threshold=0.15)).rank_params(classifier.config)
    # rev98 #1: a whole new RankParams brings its own 0.5 and 0.35, which the run takes: said
    fresh = replace(pipeline, rank=ct.RankParams(top_k=3))
    done = ct.triage_study(DEMO_CLIP, fresh, classifier, ct.RunOptions(out=tmp_path / "fresh", report=False))
    assert (f"pipeline.rank sets enter_threshold 0.5 in code (not as capsule-bleeding.toml sets it): the run ranks at it, not at "
            f"the weights' operating threshold {classifier.config.threshold:g} (a new RankParams() brings its own 0.5; "
            "replace(pipeline.rank, ...) keeps the weights'; RunOptions(threshold=T) ranks at T without this line)") in done.run["warnings"]
    # rev99 #1: a threshold the preset file sets and code changes is code's, named so
    own = tmp_path / "own.toml"
    text = (REPO / "pipelines" / "capsule-bleeding.toml").read_text()
    assert text.count("\n[rank]\n") == 1
    own.write_text(text.replace('weights = "capsule-bleeding-lite0"', f'weights = "{REPO / "weights" / "capsule-bleeding-lite0"}"')
                   .replace("\n[rank]\n", "\n[rank]\nenter_threshold = 0.6\nleave_threshold = 0.45\n"))
    filed = ct.load_pipeline(own)
    assert filed.thresholds_in_code() == {} and filed.rank_params(classifier.config).enter_threshold == 0.6
    with pytest.raises(ValueError, match=r"^pipeline.rank.leave_threshold 0.45 \(the preset file's\) is above the enter threshold "
                                         r"0.4 \(set in code\): give a leave_threshold at or below it, or set pipeline.rank.enter_threshold$"):
        replace(filed, rank=replace(filed.rank, enter_threshold=0.4)).rank_params(classifier.config)
    unchanged = ct.triage_study(DEMO_CLIP, pipeline, classifier, ct.RunOptions(out=tmp_path / "loaded", report=False))
    assert not [w for w in unchanged.run["warnings"] if "in code" in w]


def test_read_only_frames_score_as_writable_ones_on_the_torch_backend_without_a_warning(default):
    """QA 105 #4: frames of np.load(mmap_mode="r") or Arrow's buffers raised PyTorch's 'not writable' UserWarning."""
    pipeline, classifier = default
    size = classifier.config.input_size
    rgb = np.random.default_rng(1).integers(0, 255, (2, size, size, 3), dtype=np.uint8)
    frozen = rgb.copy()
    frozen.flags.writeable = False
    scorer = ct.load_classifier(pipeline, weights=classifier.weights_path, backend="torch-fp32", device="cpu")
    import torch

    handed, from_numpy = [], torch.from_numpy  # PyTorch warns once a process: what it is handed, rather (rev96 #8)
    with warnings.catch_warnings(), pytest.MonkeyPatch.context() as patch:
        warnings.simplefilter("error")
        patch.setattr(torch, "from_numpy", lambda array: handed.append(array.flags.writeable) or from_numpy(array))
        probs = scorer(ct.FrameBatch(frozen, np.arange(2), np.arange(2) / 4.0)).probs
    assert handed and all(handed)
    np.testing.assert_array_equal(probs, scorer(ct.FrameBatch(rgb, np.arange(2), np.arange(2) / 4.0)).probs)


def test_a_classifier_takes_batches_alike_on_every_backend_and_refuses_what_is_not_one(default):
    """QA 58 #5, #7, #8: a reversed-channel view was PyTorch's negative-stride error on torch only; wrong types were
    AttributeErrors; fractional indices and NaN times went through."""
    pipeline, classifier = default
    size = classifier.config.input_size
    rgb = np.random.default_rng(0).integers(0, 255, (3, size, size, 3), dtype=np.uint8)
    index, pts = np.arange(3), np.arange(3) / 4.0
    torch_classifier = ct.load_classifier(pipeline, weights=classifier.weights_path, backend="torch-fp32", device="cpu")
    for scorer in (classifier, torch_classifier):
        bgr = scorer(ct.FrameBatch(rgb[..., ::-1], index, pts)).probs
        np.testing.assert_allclose(bgr, scorer(ct.FrameBatch(rgb[..., ::-1].copy(), index, pts)).probs, atol=1e-6)
    with pytest.raises(ValueError, match="^a Classifier scores a FrameBatch\\(data, frame_index, pts_seconds\\), got ndarray$"):
        classifier(rgb)
    cases = [((list(rgb), index, pts), "FrameBatch.data must be a numpy array (uint8 [N,H,W,3]), got list"),
             ((rgb, list(index), pts), "FrameBatch.frame_index must be a numpy array (int64 [N]), got list"),
             ((rgb, index + 0.5, pts), "FrameBatch.frame_index must be whole numbers (int64), got float64"),
             ((rgb, index, np.full(3, np.nan)), "FrameBatch.pts_seconds must be finite seconds (float64), got float64 with NaN or infinite values"),
             ((rgb, index, np.array([0, 1, np.inf])), "FrameBatch.pts_seconds must be finite seconds (float64), got float64 with NaN or infinite values"),
             ((rgb, index, pts.astype(str)), "FrameBatch.pts_seconds must be finite seconds (float64), got <U32"),
             ((np.zeros((3, 0, 0, 3), np.uint8), index, pts), "FrameBatch.data must be uint8 [N,H,W,3] with H, W >= 1, got uint8 (3, 0, 0, 3)"),
             # QA 116 #4: Unix times in float32 are 128 s apart: a study's frames collapsed onto a few times
             ((rgb, index, (1.7e9 + pts).astype(np.float32)), "FrameBatch.pts_seconds in float32 cannot tell times apart by less "
                                                              "than 128 s at 1.7e+09 s: give them as float64"),
             ((rgb, index, (pts + 2100).astype(np.float16)), "FrameBatch.pts_seconds in float16 cannot tell times apart by less "
                                                             "than 2 s at 2100 s: give them as float64")]
    for args, message in cases:
        with pytest.raises(ValueError) as error:
            ct.FrameBatch(*args)
        assert str(error.value) == message
    assert ct.FrameBatch(rgb, index, (pts + 36 * 3600).astype(np.float32)).pts_seconds.dtype == np.float32  # 36 h: steps of 8 ms
    batch = ct.FrameBatch(rgb, index, pts)  # QA 116 #1: changed after it was built, it scored every frame 0.8 on OpenVINO
    batch.data = rgb.astype(np.float32) / 255
    with pytest.raises(ValueError, match=r"^FrameBatch.data must be uint8 \[N,H,W,3\] with H, W >= 1, got float32 "):
        classifier(batch)
    batch.data, batch.frame_index = rgb, index[:1]
    with pytest.raises(ValueError, match=r"^FrameBatch: 3 frames but frame_index \(1,\)"):
        classifier(batch)


@pytest.mark.parametrize("threads", [-1, 0, 1.5, "2", True])
def test_threads_is_checked_by_name_before_any_loading(shipped_weights, threads):
    """QA 58 #6: OpenVINO blamed the ONNX file ('run triage optimize again'), torch gave its own RuntimeError, and
    1.5, '2' and 0 were taken silently by OpenVINO. Checked first, so alike for every backend."""
    with pytest.raises(ValueError) as error:
        ct.load_classifier(ct.load_pipeline("capsule-bleeding"), weights=shipped_weights, device="cpu", threads=threads)
    assert str(error.value) == f"threads must be a whole number >= 1 or None (as triage optimize tuned it), got {threads!r}"


def test_swapped_or_mistyped_arguments_are_named(default):
    """QA 58 #7: each of these was an AttributeError naming an attribute of the wrong object."""
    pipeline, classifier = default
    for call, message in [(lambda: ct.load_classifier("capsule-bleeding"), "load_classifier takes a Pipeline (load_pipeline(name)), got str"),
                          (lambda: ct.triage_study(DEMO_CLIP, classifier, pipeline), "pipeline must be a Pipeline (load_pipeline(name)), got Classifier"),
                          (lambda: ct.triage_study(DEMO_CLIP, pipeline, "capsule-bleeding"),
                           "classifier must be a Classifier (load_classifier(pipeline)), got str"),
                          (lambda: ct.load_pipeline(None), "load_pipeline takes a preset name or a path to a preset file, got NoneType"),
                          # QA 78 #6: an AttributeError, a silent load of the preset's weights, pathlib's TypeError
                          (lambda: ct.load_classifier(pipeline, device=None), "device must be a string ('auto', or a name as --device takes), got NoneType"),
                          (lambda: ct.load_classifier(pipeline, backend=5), "backend must be a string ('auto', or a name as --backend takes), got int"),
                          (lambda: ct.load_classifier(pipeline, weights=""), "weights must be a weights folder or file, or an hf-hub: name (None: the preset's), got ''"),
                          (lambda: ct.load_classifier(pipeline, weights=False), "weights must be a weights folder or file, or an hf-hub: name (None: the preset's), got False"),
                          (lambda: ct.batch_table(5), "out_dir must be a path (str or pathlib.Path), got int")]:
        with pytest.raises(ValueError) as error:
            call()
        assert str(error.value) == message


def test_a_classifier_loaded_for_another_threshold_says_so_and_closes(shipped_weights, tmp_path, monkeypatch):
    """QA 58 #9: load_classifier(threshold=0.9) and a run without it ranked at the model's threshold with no
    warning; a classifier could not be closed or used as a context manager."""
    pipeline = ct.load_pipeline("capsule-bleeding")
    threads_before = threading.active_count()
    with ct.load_classifier(pipeline, weights=shipped_weights, threshold=0.9) as classifier:
        own = classifier.config.threshold
        other = ct.triage_study(DEMO_CLIP, pipeline, classifier, ct.RunOptions(out=tmp_path / "other", report=False))
        same = ct.triage_study(DEMO_CLIP, pipeline, classifier, ct.RunOptions(out=tmp_path / "same", report=False, threshold=0.9))
    said = [w for w in other.run["warnings"] if "loaded for threshold" in w]
    assert said == [f"the classifier was loaded for threshold 0.9 (load_classifier(..., threshold=...)) but the run ranks at "
                    f"{own:g}: give RunOptions(threshold=0.9) to rank at 0.9"]
    assert not [w for w in same.run["warnings"] if "loaded for threshold" in w]
    assert classifier.backend is None and threading.active_count() <= threads_before
    classifier.close()  # a second close is harmless
    # rev53: loaded for the model's own threshold, a run without one ranks at it: nothing to say
    with ct.load_classifier(pipeline, weights=shipped_weights, threshold=own) as at_own:
        quiet = ct.triage_study(DEMO_CLIP, pipeline, at_own, ct.RunOptions(out=tmp_path / "own", report=False))
    assert not [w for w in quiet.run["warnings"] if "loaded for threshold" in w]
    with pytest.raises(ValueError, match=r"^this Classifier is closed \(close\(\) or the end of its with block\): load another$"):
        classifier(ct.FrameBatch(np.zeros((1, 224, 224, 3), np.uint8), np.arange(1), np.zeros(1)))
    import capsule_triage.pipeline as pipeline_module

    monkeypatch.setattr(pipeline_module, "source_state", lambda *args, **kwargs: pytest.fail("the input was read"))
    with pytest.raises(ValueError, match=r"^this Classifier is closed \(close\(\) or the end of its with block\): load another$"):
        ct.triage_study(DEMO_CLIP, pipeline, classifier, ct.RunOptions(out=tmp_path / "closed"))  # QA 116 #6: refused after
    assert not (tmp_path / "closed").exists()  # the input was read (hashed: seconds for a long study)


def test_a_thumbnail_that_cannot_be_reread_is_said(default, tmp_path, monkeypatch):
    """QA 106 #1: an event's thumbnail lost to a source that could not be re-read there left the page's first picture
    missing without a word (the tables' thumbnail null): a Warning line names the frames."""
    import capsule_triage.pipeline as pipeline_module

    pipeline, classifier = default
    real = pipeline_module.iter_frames_at
    monkeypatch.setattr(pipeline_module, "iter_frames_at", lambda path, indices, times, **kw: (
        (i, rgb) for i, rgb in real(path, indices, times, **kw) if i != indices[0]))
    result = ct.triage_study(DEMO_CLIP, pipeline, classifier, ct.RunOptions(out=tmp_path / "o", report=False))
    events = pq.read_table(tmp_path / "o" / "events.parquet").to_pylist()
    lost = events[0]["peak_frame"]
    assert events[0]["thumbnail"] is None and all(e["thumbnail"] for e in events[1:])
    shown = {e["peak_frame"] for e in events} | set(pq.read_table(tmp_path / "o" / "top_frames.parquet")["frame_index"].to_pylist())
    said = [line for line in result.warning_lines() if "could not be re-read for" in line]
    from capsule_triage.report_svg import fmt_clock

    assert said == [f"{DEMO_CLIP}: 1 of the {len(shown)} frames shown as event peaks or top frames could not be re-read for its "
                    f"thumbnail (frame {lost} at {fmt_clock(events[0]['peak_seconds'])}): the page shows none for it, the tables' "
                    "thumbnail is null"], result.warning_lines()


@pytest.fixture
def broken_openvino(monkeypatch):
    """OpenVINO installed (its spec is found) but failing on import, as with its shared library missing."""
    import capsule_triage.backends as backends_module

    def broken():
        raise ImportError("libopenvino.so.1: cannot open shared object file: No such file or directory", name="openvino")

    backends_module._import_error.cache_clear()
    backends_module.openvino_native_bf16.cache_clear()  # (it imports OpenVINO: a value cached earlier would not)
    monkeypatch.setattr(backends_module, "import_openvino", broken)
    yield monkeypatch
    backends_module._import_error.cache_clear()
    backends_module.openvino_native_bf16.cache_clear()


def test_auto_passes_over_an_engine_that_cannot_be_imported(shipped_weights, broken_openvino, tmp_path):
    """QA 107 #4 rest: `auto` chose ov-fp32 because openvino was installed, and the run stopped on its import; a
    nightly batch on the shipped defaults then failed every study. It takes the next accepted backend, and says why."""
    ranked = json.loads((shipped_weights / "backends.json").read_text())["candidates"]
    accepted = sorted((k for k, v in ranked.items() if v["accepted"] and k.endswith("fp32")), key=lambda k: -ranked[k]["frames_per_second"])
    assert accepted[0].startswith("ov-"), accepted  # the shipped report's fastest fp32 is OpenVINO's: the case to test
    expected = next(k for k in accepted if not k.startswith("ov-"))
    pipeline = ct.load_pipeline("capsule-bleeding")
    with ct.load_classifier(pipeline, weights=shipped_weights, device="cpu", backend="auto") as classifier:
        selection = classifier.describe()["backend_selection"]
        assert classifier.describe()["backend"] == expected
        frames = np.full((2, 224, 224, 3), 90, np.uint8)
        assert classifier(ct.FrameBatch(frames, np.array([0, 1]), np.array([0.0, 0.5]))).probs.shape == (2, 2)
    lines = [w for w in selection.get("warnings", []) if "left out" in w]
    assert lines[0] == (f"{accepted[0]} left out: its engine fails to load, openvino (libopenvino.so.1: cannot open shared object "
                        f"file: No such file or directory); reinstall it (the run takes {expected})"), selection
    assert "faster ones need an engine that imports" in selection["reason"], selection["reason"]

    import capsule_triage.backends as backends_module  # no engine of an ONNX file imports: torch runs the network

    broken_openvino.setattr(backends_module, "import_onnxruntime", backends_module.import_openvino)
    backends_module._import_error.cache_clear()
    with ct.load_classifier(pipeline, weights=shipped_weights, device="cpu", backend="auto") as classifier:
        choice = classifier.describe()["backend_selection"]
    assert choice["backend"] == "torch-fp32", choice
    assert choice["warnings"][-1].startswith("ort-fp32 left out: its engine fails to load, onnxruntime ("), choice["warnings"]
    said = [w for w in choice["warnings"] if " left out: its engine fails to load" in w]  # QA 113 #6: the first said "(the run
    assert len(said) > 1 and all(w.endswith("; reinstall it (the run takes torch-fp32)") for w in said), said  # takes ort-fp32)"


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="OpenVINO is not installed (no wheels for Linux on Arm)")
def test_an_interrupt_while_an_engine_starts_is_an_interrupt_not_a_broken_engine(tmp_path):
    """QA 115 #1: a SIGTERM (or Ctrl-C) while `auto` asked OpenVINO's CPU plugin came back as OpenVINO's own error
    ("initialization failed"): the engine was called broken ("reinstall it"), and the run went on and exited 0. In a
    process of its own (the CLI's signal handling; a signal to pytest itself has crashed it)."""
    from conftest import triage

    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(
        "import os, signal, time\n"
        "from capsule_triage import backends\n"
        "def import_openvino():\n"
        "    try:\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        time.sleep(0.2)\n"
        "    except KeyboardInterrupt:  # as OpenVINO's native code gives it back\n"
        "        pass\n"
        "    raise RuntimeError('initialization failed')\n"
        "backends.import_openvino = import_openvino\n")
    done = triage("run", DEMO_CLIP, "--out", tmp_path / "o", env={"PYTHONPATH": str(tmp_path / "hook")})
    assert (done.returncode, done.stderr.strip()) == (130, f"Interrupted; nothing was written for {DEMO_CLIP}."), done.stderr
    assert not (tmp_path / "o").exists()


def test_a_broken_openvino_s_bf16_is_said_and_optimize_still_describes_the_machine(shipped_weights, broken_openvino, tmp_path):
    """rev100 #1: with OpenVINO broken, ov-bf16 (accepted, the fastest) was dropped as a CPU it lacks, with no Warning:
    line; #2: `triage optimize` described the machine through OpenVINO's own view of it and stopped on the import."""
    import shutil

    import capsule_triage.backend_choice as choice_module
    from capsule_triage import optimize

    weights = tmp_path / "w"
    shutil.copytree(shipped_weights, weights)
    report = json.loads((weights / "backends.json").read_text())
    report["candidates"]["ov-bf16"].update(accepted=True, frames_per_second=999.0, max_score_diff=0.01, events_identical=True)
    del report["candidates"]["ov-bf16"]["reason"]  # as an accepted candidate's entry is written
    (weights / "backends.json").write_text(json.dumps(report))
    broken_openvino.setattr(choice_module, "_other_numerics", lambda machine, backends: None)  # on any CPU: as measured
    choice = choice_module.choose_backend("auto", "cpu", weights, report["weights_sha256"])
    assert choice["backend"] not in ("ov-bf16", "ov-fp32"), choice
    assert [w.split(":")[0] for w in choice["warnings"] if "left out" in w] == ["ov-bf16 left out", "ov-fp32 left out"], choice
    assert "faster ones need an engine that imports" in choice["reason"] and "CPU feature" not in choice["reason"], choice["reason"]
    assert "openvino_native_bf16" not in optimize._machine() and optimize.skipped("ov-bf16") is None


def test_an_openvino_whose_cpu_plugin_fails_is_left_out_by_auto(shipped_weights, monkeypatch):
    """rev101 #4: OpenVINO that imports but whose CPU plugin cannot be created (a library of the plugin missing) passed
    the import check, and the first look at the CPU plugin stopped auto and `triage optimize`."""
    import capsule_triage.backends as backends_module
    from capsule_triage import optimize
    from capsule_triage.backend_choice import choose_backend

    def no_plugin():
        raise RuntimeError("Exception from src/inference/src/core.cpp:110: Failed to create plugin libopenvino_intel_cpu_plugin.so")

    backends_module._import_error.cache_clear()
    monkeypatch.setattr(backends_module, "openvino_native_bf16", no_plugin)
    monkeypatch.setattr(optimize, "openvino_native_bf16", no_plugin)
    try:
        weights_id = json.loads((shipped_weights / "backends.json").read_text())["weights_sha256"]
        choice = choose_backend("auto", "cpu", shipped_weights, weights_id)
        assert "openvino_native_bf16" not in optimize._machine() and optimize.skipped("ov-bf16") is None
    finally:
        backends_module._import_error.cache_clear()
    assert not choice["backend"].startswith("ov-"), choice
    assert any(w.startswith("ov-fp32 left out: its engine fails to load, openvino (Exception from src/inference/src/core.cpp:110: "
                            "Failed to create plugin") for w in choice["warnings"]), choice["warnings"]


def test_an_engine_that_cannot_be_imported_is_named_not_the_onnx_file(shipped_weights, monkeypatch):
    """QA 107 #4: OpenVINO installed but broken (libopenvino.so.1 missing) said the ONNX file could not be loaded and to run
    `triage optimize` again, which cannot help (and cannot run on a read-only install)."""
    import capsule_triage.classifier as classifier_module

    def broken(*args, **kwargs):
        raise ImportError("libopenvino.so.1: cannot open shared object file: No such file or directory", name="openvino")

    monkeypatch.setattr(classifier_module, "onnx_backend", broken)
    with pytest.raises(ct.DeviceError) as error:
        ct.load_classifier(ct.load_pipeline("capsule-bleeding"), weights=shipped_weights, device="cpu", backend="ov-fp32")
    assert str(error.value) == ("ov-fp32: cannot import its engine, openvino (libopenvino.so.1: cannot open shared object file: No "
                                "such file or directory): reinstall it, or give --backend torch-fp32")
    # QA 113 #7: a library OpenVINO imports, missing: the error named that library alone, and the installation as broken
    import capsule_triage.backends as backends_module

    def lacking(*args, **kwargs):
        raise ImportError("No module named '_its_dependency'", name="_its_dependency")

    monkeypatch.setattr(classifier_module, "onnx_backend", lacking)
    monkeypatch.setattr(backends_module, "import_openvino", lacking)
    backends_module._import_error.cache_clear()
    backends_module.openvino_native_bf16.cache_clear()
    try:
        with pytest.raises(ct.DeviceError) as error:
            ct.load_classifier(ct.load_pipeline("capsule-bleeding"), weights=shipped_weights, device="cpu", backend="ov-fp32")
        assert str(error.value) == ("ov-fp32: cannot import its engine, openvino (No module named '_its_dependency'): reinstall "
                                    "it, or give --backend torch-fp32")
    finally:
        backends_module._import_error.cache_clear()
        backends_module.openvino_native_bf16.cache_clear()


def test_a_classifier_used_in_a_fork_or_pickled_is_refused_not_hung(shipped_weights, tmp_path):
    """QA 124 #1: a classifier loaded, then used in a child made by fork (multiprocessing's default on Linux: load once,
    then Pool.map over studies) hung in its engine's thread pool for good (ov-fp32 in start_async, torch-fp32 in its
    forward), and rev110 #1 its close() there (OpenVINO); #2: pickling it for a 'spawn' pool said "cannot pickle
    'CompiledModel' object"."""
    import copy
    import pickle

    pipeline = ct.load_pipeline("capsule-bleeding")
    batch = ct.FrameBatch(np.zeros((2, 224, 224, 3), np.uint8), np.arange(2), np.arange(2) / 4.0)
    with ct.load_classifier(pipeline, weights=shipped_weights) as classifier:
        classifier(batch)  # the engine's threads are running
        read, write = os.pipe()
        child = os.fork()
        if child == 0:  # the child: its lines back, then out without running pytest's cleanup, whatever happens
            said = []
            try:
                for attempt in (lambda: classifier(batch), lambda: ct.triage_study(DEMO_CLIP, pipeline, classifier, ct.RunOptions(out=tmp_path / "child"))):
                    try:
                        attempt()
                        said.append("scored")
                    except ValueError as exc:
                        said.append(str(exc))
                classifier.close()  # rev110 #1: the engine's cleanup (OpenVINO's request queue) hung in the child
                said.append("closed")
            except BaseException as exc:  # noqa: BLE001 - said to the parent, not raised into pytest's child copy
                said.append(repr(exc))
            finally:
                os.write(write, "\n".join(said).encode())
                os._exit(0)
        os.close(write)
        deadline = time.monotonic() + 120
        while os.waitpid(child, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(child, signal.SIGKILL)
                os.waitpid(child, 0)
                pytest.fail("the forked child hung scoring")
            time.sleep(0.1)
        with os.fdopen(read, "rb") as fh:
            said = fh.read().decode().splitlines()
        refused = (f"this Classifier was loaded in process {os.getpid()} and cannot score in process {child}, a fork of it (its "
                   "engine's threads are not there: it would hang); start worker processes with multiprocessing's 'spawn' or "
                   "'forkserver' method and load one in each (as `triage batch` does): in a fork of a process that has loaded "
                   "one, any engine can hang")
        assert said == [refused, refused, "closed"] and not (tmp_path / "child").exists()
        for copied in (pickle.dumps, copy.copy):
            with pytest.raises(TypeError, match=r"^a Classifier is not copied or pickled \(its engine is native code, its threads this process's\); start"):
                copied(classifier)
        assert classifier(batch).probs.shape == (2, 2)  # the parent's is as it was
