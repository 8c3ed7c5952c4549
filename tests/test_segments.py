"""One video decoded by several processes, one keyframe-aligned part each: the same frames, indices,
timestamps, counts and errors as one pass; no split where a part would need another's frames."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from capsule_triage.errors import InputError
from capsule_triage.frames import DecodeStats
from capsule_triage.reader import ReadOptions, read_frames
from capsule_triage.reader_process import read_frames_in_process
from capsule_triage.segments import plan_segments
from conftest import DEMO_CLIP, encode_clip

READ = ReadOptions(batch_size=8, short_side=64)


def _in_time_order(batches):
    batches = list(batches)
    index = np.concatenate([b.frame_index for b in batches])
    order = np.argsort(index, kind="stable")
    return (np.concatenate([b.data for b in batches])[order], index[order],
            np.concatenate([b.pts_seconds for b in batches])[order])


def _one_pass_and_parts(path, processes, read=READ):
    single, parts = DecodeStats(), DecodeStats()
    expected = _in_time_order(read_frames(path, read, single))
    got = _in_time_order(read_frames_in_process(path, read, parts, processes=processes, depth=2))
    return expected, got, single, parts


def _assert_same(expected, got, single, parts):
    for a, b in zip(expected, got):
        np.testing.assert_array_equal(a, b)
    assert (parts.frames_decoded, parts.frames_skipped, parts.errors) == (single.frames_decoded, single.frames_skipped, single.errors)
    assert parts.image_sizes == single.image_sizes and sum(single.image_sizes.values()) == single.frames_decoded  # summed (rev83 #4)


def test_cuts_are_clean_keyframes_and_first_indices_count_the_frames_before():
    import av

    plan = plan_segments(DEMO_CLIP, 3)
    assert plan is not None and len(plan.segments) == 3 and plan.packets_read == 64
    with av.open(str(DEMO_CLIP)) as container:
        packets = [(p.pts, p.is_keyframe) for p in container.demux(video=0) if p.size]
    shown = sorted(pts for pts, _ in packets)
    assert plan.segments[0].start_pts is None and plan.segments[-1].end_pts is None
    for before, after in zip(plan.segments, plan.segments[1:]):
        assert before.end_pts == after.start_pts and (after.start_pts, True) in packets
        assert after.first_index == shown.index(after.start_pts)  # frames shown before the cut


@pytest.mark.parametrize("processes", [2, 3])
def test_parts_give_the_frames_of_one_pass_h264_with_b_frames(processes):
    _assert_same(*_one_pass_and_parts(DEMO_CLIP, processes))


def test_parts_give_the_frames_of_one_pass_mjpeg_every_frame_a_keyframe(tmp_path):
    rng = np.random.default_rng(0)
    clip = encode_clip([rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(30)], tmp_path / "a.avi", codec="mjpeg")
    plan = plan_segments(clip, 4)
    assert plan is not None and len(plan.segments) == 4
    _assert_same(*_one_pass_and_parts(clip, 4))


def test_damaged_frames_are_counted_as_in_one_pass(tmp_path):
    from malformed import frame_payloads

    rng = np.random.default_rng(1)
    clip = encode_clip([rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(30)], tmp_path / "a.avi", codec="mjpeg")
    data = bytearray(clip.read_bytes())
    for start, end in frame_payloads(clip)[7:9] + frame_payloads(clip)[20:21]:
        data[start:end] = b"\x00" * (end - start)
    damaged = tmp_path / "damaged.avi"
    damaged.write_bytes(bytes(data))
    expected, got, single, parts = _one_pass_and_parts(damaged, 3)
    _assert_same(expected, got, single, parts)
    assert parts.frames_skipped == 3


def test_a_truncated_video_fails_as_in_one_pass(tmp_path):
    import av

    with av.open(str(DEMO_CLIP)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    clip = encode_clip(frames, tmp_path / "faststart.mp4", container_options={"movflags": "faststart"})  # header first
    data = clip.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: int(len(data) * 0.6)])
    assert plan_segments(truncated, 2) is not None  # the packets that are there can be split
    messages = []
    for read in (lambda: read_frames(truncated, READ), lambda: read_frames_in_process(truncated, READ, processes=2)):
        with pytest.raises(InputError) as info:
            list(read())
        messages.append(str(info.value))
    assert messages[0] == messages[1] and "truncated video" in messages[1]


def test_a_video_with_one_keyframe_is_not_split(tmp_path):
    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(24)]
    clip = encode_clip(frames, tmp_path / "one_gop.mp4", options={"g": "1000", "keyint_min": "1000", "sc_threshold": "0"})
    assert plan_segments(clip, 2) is None
    _assert_same(*_one_pass_and_parts(clip, 2))  # decoded in one pass by one process


def test_triage_with_two_decoders_writes_the_same_tables(random_weights, tmp_path):
    from capsule_triage import RunOptions, load_classifier, load_pipeline, triage_study

    pipeline = load_pipeline("capsule-bleeding")
    classifier = load_classifier(pipeline, weights=str(random_weights))
    tables = {}
    for processes in (1, 2):
        out = tmp_path / f"out{processes}"
        result = triage_study(DEMO_CLIP, pipeline, classifier, RunOptions(out=out, decoder_processes=processes, report=False))
        assert result.run["decoder_processes"] == processes
        tables[processes] = [pq.read_table(out / name).to_pylist() for name in ("frames.parquet", "events.parquet", "top_frames.parquet")]
    assert tables[1] == tables[2]
    assert json.loads((tmp_path / "out2" / "run.json").read_text())["decoded_in"] == "process"


def test_skipping_duplicates_needs_one_decoder(random_weights, tmp_path):
    from capsule_triage import RunOptions, load_classifier, load_pipeline, triage_study

    pipeline = load_pipeline("capsule-bleeding")
    classifier = load_classifier(pipeline, weights=str(random_weights))
    with pytest.raises(ValueError, match="use one decoder process"):
        triage_study(DEMO_CLIP, pipeline, classifier, RunOptions(out=tmp_path / "o", decoder_processes=2, skip_duplicates=1.0))
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("name,splits", [("rvimlab_laparoscopic_endo_10s.mp4", True), ("wcebleedgen_mixed_triage_4fps.mp4", True),
                                         ("wcebleedgen_mixed_triage_4fps.avi", True),
                                         ("wcebleedgen_bleeding_run_0419-0510_4fps.mp4", False)])  # one keyframe only
def test_shared_real_videos_decode_the_same_in_parts(name, splits):
    from conftest import VIDEOS

    path = VIDEOS / name
    if not path.exists():
        pytest.skip(f"real data not found at {path}")
    plan = plan_segments(path, 3)
    assert (plan is not None and len(plan.segments) >= 2) == splits
    _assert_same(*_one_pass_and_parts(path, 3, ReadOptions(batch_size=16, short_side=96)))
