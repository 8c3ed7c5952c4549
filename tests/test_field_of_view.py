"""Frames that show no field of view (black, too dark, or burned-in text only) are not scored (QA pass 27:
a dark gastroscope view's patient text was taken for the view, scored 0.63-0.65, flagged and shown as the
thumbnail; an all-black study was one confident event)."""

from __future__ import annotations

import json
import re

import av
import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from capsule_triage.field_of_view import has_view
from capsule_triage.ranking import RankParams, rank
from capsule_triage.report_svg import timeline_svg
from conftest import DEMO_CLIP, WCE, encode_clip, load_rgb, manifest_rows, needs_shared, triage

PATIENT = ["OLYMPUS EVIS", "ID: 0042-ANON", "Name: TEST^PATIENT", "2026/12/02 08:14:03"]


def demo_frames(n: int | None = None) -> list[np.ndarray]:
    with av.open(str(DEMO_CLIP)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return frames[:n]


def text_only(h: int, w: int, scale: float = 1.0) -> np.ndarray:
    """A black frame with a scope's burned-in patient lines at its left, as before insertion."""
    frame = np.zeros((h, w, 3), np.uint8)
    for i, line in enumerate(PATIENT):
        cv2.putText(frame, line, (int(12 * scale), int((40 + 36 * i) * scale)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                    max(1, round(2 * scale)), cv2.LINE_AA)
    return frame


def gastroscope(view: np.ndarray, h: int = 720, w: int = 1280) -> np.ndarray:
    """A 16:9 frame: the patient lines at the left and the (round) view right of centre."""
    frame = text_only(h, w)
    side = h - 40
    frame[20 : 20 + side, w - side - 60 : w - 60] = cv2.resize(view, (side, side), interpolation=cv2.INTER_AREA)
    return frame


def test_real_views_show_one_and_black_dark_or_text_only_frames_do_not():
    views = demo_frames()
    assert has_view(np.stack(views)).all()  # every frame of the committed capsule clip (64)
    wide = np.stack([gastroscope(v) for v in views[:8]])
    assert has_view(wide).all()  # the view beside burned-in text
    blank = [np.zeros((720, 1280, 3), np.uint8), text_only(720, 1280), text_only(1080, 1920, scale=1.5), text_only(224, 224, 0.3),
             (views[0] * 0.07).astype(np.uint8),  # a view too dark to read (every pixel below the threshold)
             cv2.resize(text_only(720, 1280), (640, 360))]
    assert [bool(has_view(frame[None])[0]) for frame in blank] == [False] * 6
    small = np.zeros((720, 1280, 3), np.uint8)
    small[300:420, 600:720] = cv2.resize(views[0][62:162, 62:162], (120, 120))  # a bright patch a sixth of the short side across: no view
    big = np.zeros((720, 1280, 3), np.uint8)
    big[200:400, 600:800] = cv2.resize(views[0][62:162, 62:162], (200, 200))  # 200 px, more than a quarter of 720 across: a view
    assert has_view(np.stack([small, big])).tolist() == [False, True]
    assert has_view(np.zeros((0, 64, 64, 3), np.uint8)).shape == (0,)


def test_flat_screens_show_no_view():
    """Review rev26: a processor's blue "no signal" screen, a plain grey and a light panel of patient details
    were taken for views (the panel scored 0.934 and was a thumbnail). Colour bars still count as one."""
    blue = np.zeros((720, 1280, 3), np.uint8)
    blue[:] = (0, 0, 200)
    cv2.putText(blue, "NO SIGNAL", (400, 380), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 4)
    panel = np.zeros((720, 1280, 3), np.uint8)
    cv2.rectangle(panel, (40, 40), (420, 300), (230, 230, 230), -1)
    for i in range(5):
        cv2.putText(panel, "Patient: DOE^JANE 1961", (50, 80 + 45 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 2)
    grey = np.full((720, 1280, 3), 40, np.uint8)
    shaded = panel.copy()  # QA 28: a panel with a gradient, or rows shaded in turn, is not flat, but grey
    shaded[40:300, 40:420] = np.linspace(170, 235, 380).astype(np.uint8)[None, :, None]
    zebra = panel.copy()  # bluish grey (QA 28's colours): saturation 6-10 %
    zebra[40:300, 40:420] = (215, 220, 228)
    for row in range(40, 300, 40):
        zebra[row : row + 20, 40:420] = (190, 198, 210)
    for line in range(4):
        cv2.putText(shaded, "Name: DOE^JANE", (50, 80 + 45 * line), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (20, 20, 60), 2)
    bars = np.zeros((720, 1280, 3), np.uint8)
    for i, colour in enumerate([(192, 192, 192), (192, 192, 0), (0, 192, 192), (0, 192, 0), (192, 0, 192), (192, 0, 0), (0, 0, 192)]):
        bars[:, i * 1280 // 7 : (i + 1) * 1280 // 7] = colour
    assert has_view(np.stack([blue, panel, grey, shaded, zebra, bars])).tolist() == [False, False, False, False, False, True]
    views = np.stack(demo_frames(8))
    assert has_view(views).all() and has_view(np.stack([gastroscope(v) for v in views])).all()


@needs_shared
def test_every_real_capsule_still_shows_a_view():
    stills = np.stack([load_rgb(WCE / row["path"]) for split in ("train", "test") for row in manifest_rows(split)])
    assert len(stills) == 1868 and has_view(stills).all()  # every still (the test split alone until 2026-12-02)
    for clip in sorted((WCE.parent / "videos").glob("*.mp4")):  # the two capsule clips and the 720p laparoscopic one
        with av.open(str(clip)) as container:
            frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
        assert has_view(frames).all(), clip.name


def test_frames_without_a_view_are_ranked_as_if_never_decoded():
    pts, index = np.arange(60) / 4, np.arange(60)
    probs = np.tile(np.float32([0.9, 0.1]), (60, 1))
    probs[10:30] = [0.05, 0.95]  # one abnormal stretch, 2.5-7.25 s
    probs[40] = [0.0, 1.0]  # one abnormal frame (a top frame)
    view = np.ones(60, bool)
    view[18:22] = False  # four frames inside the stretch show no view
    view[50:] = False
    probs[~view] = np.nan
    params = RankParams(top_k=5, nms_seconds=1.0)
    got = rank(pts, index, probs, ["normal", "abnormal"], [1], params, has_view=view)
    alone = rank(pts[view], index[view], probs[view], ["normal", "abnormal"], [1], params)
    assert got.events == alone.events and got.top_frames == alone.top_frames
    assert [(e.start_frame, e.end_frame, e.frame_count) for e in got.events] == [(10, 30, 17)]  # hysteresis: 30 smooths to 0.44
    assert np.isnan(got.scores[~view]).all() and np.isnan(got.smoothed[~view]).all() and (got.event_id[~view] == -1).all()
    np.testing.assert_array_equal(got.scores[view], alone.scores)
    np.testing.assert_array_equal(got.event_id[view], alone.event_id)
    assert all(f not in index[~view] for f, _, _ in got.top_frames)
    with pytest.raises(ValueError, match="finite"):  # NaN where a frame shows its view is still a model's fault
        rank(pts, index, probs, ["normal", "abnormal"], [1], params)
    view[18:22] = True  # review rev26: frames without a view for merge_gap_seconds or more inside a stretch end its event
    view[14:24] = False
    probs[14:24] = np.nan
    apart = rank(pts, index, probs, ["normal", "abnormal"], [1], params, has_view=view)
    assert sorted((e.start_frame, e.end_frame, e.duration_seconds) for e in apart.events) == [(10, 13, 1.0), (24, 30, 1.75)]
    none = rank(pts, index, np.full_like(probs, np.nan), ["normal", "abnormal"], [1], params, has_view=np.zeros(60, bool))
    assert none.events == [] and none.top_frames == [] and (none.event_id == -1).all() and np.isnan(none.scores).all()


def test_a_run_leaves_frames_without_a_view_unscored_and_says_so(tmp_path, shipped_weights):
    views = demo_frames()
    h, w = views[0].shape[:2]
    dark = [text_only(h, w, 0.3)] * 8  # 2 s of patient text on black inside the first bleeding stretch (3.5-7.25 s)
    clip = encode_clip(views[:18] + dark + views[18:], tmp_path / "study.mp4")
    out = tmp_path / "out"
    done = triage("run", clip, "--weights", shipped_weights, "--out", out, "--backend", "torch-fp32")
    assert done.returncode == 0, done.stderr
    assert "72 frames (0 skipped, 8 without a field of view), " in done.stdout and "Warning" not in done.stderr, done.stdout
    frames = pq.read_table(out / "frames.parquet").to_pydict()
    blank = [i for i, v in enumerate(frames["has_view"]) if not v]
    assert blank == list(range(18, 26))
    for column in ("score", "smoothed_score", "prob_bleeding", "prob_non-bleeding"):
        assert [frames[column][i] for i in blank] == [None] * 8, column  # null: not scored
        assert None not in [frames[column][i] for i in range(72) if i not in blank]
    assert not any(frames["flagged"][i] for i in blank)
    events = pq.read_table(out / "events.parquet").to_pylist()
    top = pq.read_table(out / "top_frames.parquet").to_pylist()
    assert len(events) >= 2 and all(e["peak_frame"] not in blank for e in events + [{"peak_frame": t["frame_index"]} for t in top])
    run = json.loads((out / "run.json").read_text())
    assert run["frames_without_view"] == 8 and run["warnings"] == []
    page = (out / "report.html").read_text()
    shown = re.sub(r"<script>.*?</script>", "", page, flags=re.S).lower()  # what is shown, not the tables' sort script (isNaN)
    assert 'class="noview"' in page and "no field of view from 0:04.5 to 0:06.3 (8 frames): not scored" in page and "nan" not in shown
    assert "8 without a field of view (not scored)" in page
    for event_page in (out / "report").glob("event-*.html"):
        assert "nan" not in event_page.read_text().lower()

    black = encode_clip([np.zeros((h, w, 3), np.uint8)] * 6 + [text_only(h, w, 0.3)] * 6, tmp_path / "black.mp4")
    done = triage("run", black, "--weights", shipped_weights, "--out", tmp_path / "b", "--backend", "torch-fp32")
    line = f"{black}: no frame shows a field of view (black, too dark, a flat or grey (monochrome) picture, or burned-in text only): not scored, in no event"
    assert done.returncode == 0 and f"Warning: {line}" in done.stderr.splitlines(), done.stderr
    assert json.loads((tmp_path / "b" / "run.json").read_text())["warnings"] == [line]
    assert pq.read_table(tmp_path / "b" / "events.parquet").num_rows == 0 and not list((tmp_path / "b").glob("thumbnails/*"))
    assert "No events: no frame shows a field of view" in (tmp_path / "b" / "report.html").read_text()


def test_the_run_line_counts_one_event_as_one(tmp_path, shipped_weights):
    """The run's summary line said "1 events"."""
    clip = encode_clip(demo_frames(24), tmp_path / "study.mp4")
    done = triage("run", clip, "--weights", shipped_weights, "--out", tmp_path / "out", "--backend", "torch-fp32")
    events = pq.read_table(tmp_path / "out" / "events.parquet").num_rows
    assert done.returncode == 0 and events == 1 and "24 frames (0 skipped), 1 event, " in done.stdout, done.stdout + done.stderr


def test_a_nightly_batch_lists_a_blank_study_beside_a_readable_one(tmp_path, shipped_weights):
    """The study that showed nothing is one row of the summary, marked, and the others are as before."""
    views = demo_frames(24)
    studies = tmp_path / "studies"
    studies.mkdir()
    h, w = views[0].shape[:2]
    encode_clip(views + [np.zeros((h, w, 3), np.uint8)], studies / "readable.mp4")  # one black frame at the end
    encode_clip([text_only(h, w, 0.3)] * 12, studies / "blank.mp4")
    done = triage("batch", studies, "--weights", shipped_weights, "--out", tmp_path / "night", "--backend", "torch-fp32", "-q")
    line = ("1 study shows no field of view in most frames (black, too dark, a flat or grey (monochrome) picture, or burned-in text only: not scored): "
            "blank.mp4")  # QA 28: said only in its run.json and the index
    assert done.returncode == 0 and f"Warning: {line}" in done.stderr.splitlines(), done.stderr
    assert f"warning {line}" in (tmp_path / "night" / "batch.log").read_text()
    rows = {r["input_path"]: r for r in pq.read_table(tmp_path / "night" / "studies.parquet").to_pylist()}
    assert all(r["wall_seconds"] > 0 and r["fps"] > 0 for r in rows.values())  # QA 28: a comment had swallowed wall_seconds
    assert {k: (r["status"], r["frames"], r["frames_without_view"], r["events"] > 0, r["top_score"] is None) for k, r in rows.items()} == {
        "blank.mp4": ("ok", 12, 12, False, True), "readable.mp4": ("ok", 25, 1, True, False)}  # nothing scored: no top score
    index = (tmp_path / "night" / "index.html").read_text()
    assert index.count("without a view") == 2 and "\u26a0 12 without a view" in index and '"hint">(1 without a view)' in index
    again = triage("batch", studies, "--weights", shipped_weights, "--out", tmp_path / "night", "--backend", "torch-fp32", "-q")
    assert again.returncode == 0 and again.stderr == "", again.stderr  # QA 88 #2: said the night it was scored, not every night


def test_a_change_of_results_redoes_a_batch(monkeypatch):
    """Review rev26: a batch re-run skipped studies made before frames without a view were left out (the
    fingerprint held the package version only): RESULTS_VERSION is part of it."""
    from capsule_triage.batch import records
    from capsule_triage.pipeline import RunOptions
    from capsule_triage.presets import load_pipeline

    pipeline = load_pipeline()
    before = records.pipeline_fingerprints(pipeline, weights=None, backend="auto", device_type="cpu", run=RunOptions())["frames"]
    monkeypatch.setattr(records, "RESULTS_VERSION", records.RESULTS_VERSION + 1)
    assert records.pipeline_fingerprints(pipeline, weights=None, backend="auto", device_type="cpu", run=RunOptions())["frames"] != before


def test_a_one_frame_stretch_without_a_view_is_named_by_its_frame():
    """QA 28 L2: one frame without a view at 30 frames/s was titled "from 0:12.5 to 0:12.5" (the scored
    neighbours' times, in tenths)."""
    t = np.arange(600) / 30.0
    smoothed = np.full(600, 0.2)
    smoothed[375] = np.nan  # 12.5 s
    smoothed[450:480] = np.nan  # 15.0-15.97 s
    page = timeline_svg(t, smoothed, enter=0.5, leave=0.4, spans=[])
    assert "no field of view at 0:12.5 (1 frame): not scored" in page
    assert "no field of view from 0:15.0 to 0:16.0 (30 frames): not scored" in page
    assert page.count('class="noview"') == 2


def test_the_note_of_a_study_mostly_without_a_view_says_no():
    """QA 66 #4: "8 of 11 frames (73%) show a field of view (...): not scored" said the opposite of what it meant."""
    from pathlib import Path

    from capsule_triage.field_of_view import NO_VIEW_KINDS
    from capsule_triage.run_notes import no_view_note

    assert no_view_note(Path("s"), np.array([True, False, False, False])) == (
        f"s: 3 of 4 frames (75%) show no field of view ({NO_VIEW_KINDS}): not scored, in no event")
    assert no_view_note(Path("s"), np.zeros(4, dtype=bool)).startswith("s: no frame shows a field of view (")
