"""A heavily compressed video is said (QA 61 M3: low-bitrate AVIs of the same 90 frames flagged 68-74 % against 37 %,
without a word), at floors measured by benchmarks/compression.py."""

from __future__ import annotations

import json

import av
import pytest

from capsule_triage import bitrate
from capsule_triage.frames import DecodeStats, SourceInfo
from conftest import DEMO_CLIP, REPO, demo_clip_frames, encode_clip


def _info(codec: str, width: int, height: int, path: str = "/data/x.avi") -> SourceInfo:
    return SourceInfo(path=path, kind="video", codec=codec, width=width, height=height, average_fps=4.0,
                      duration_seconds=None, num_frames_from_header=None, size_bytes=0)


def test_the_floors_are_the_ones_the_benchmark_measured():
    measured = json.loads((REPO / "benchmarks" / "results" / "compression.json").read_text())
    assert measured["crossing_limit"] == bitrate.CROSSING_LIMIT and measured["floors"] == bitrate.FLOORS
    for family, floor in bitrate.FLOORS.items():  # a floor lies between the encodings on either side of the limit
        rows = [r for r in measured["rows"] if r["family"] == family]
        limit = bitrate.CROSSING_LIMIT * measured["frames"]
        assert max(r["bits_per_pixel"] for r in rows if r["crossings"] >= limit) <= floor
        assert min(r["bits_per_pixel"] for r in rows if r["crossings"] < limit) >= floor
    readme = " ".join((REPO / "README.md").read_text().split())
    floors = bitrate.FLOORS
    assert f"(H.264 {floors['h264']:g}, MPEG-4 Part 2 {floors['mpeg4']:g}, MJPEG {floors['mjpeg']:g} bits per pixel" in readme


def test_bits_are_counted_over_what_the_model_sees():
    stats = DecodeStats(frames_decoded=10, video_bytes=10 * 13_000)  # 104,000 bits a frame
    hd = _info("h264", 1280, 720)
    assert bitrate.bits_per_pixel(hd, stats) == pytest.approx(104_000 / (1280 * 720))  # 0.113 of the stored pixels
    assert bitrate.bits_per_model_pixel(hd, stats, 224) == pytest.approx(104_000 / (224 * 224 * 1280 / 720))  # 1.17 at 224 px
    assert bitrate.low_bitrate_note(hd, stats, 224, 4.0) is None
    small = _info("h264", 160, 160)  # enlarged for the model: its own pixels count
    assert bitrate.bits_per_model_pixel(small, DecodeStats(frames_decoded=1, video_bytes=300), 224) == pytest.approx(2400 / 160**2)
    low = DecodeStats(frames_decoded=2, video_bytes=2 * 1000)
    note = bitrate.low_bitrate_note(_info("mpeg4", 224, 224), low, 224, 4.0)
    assert note.startswith("/data/x.avi: heavily compressed video (0.159 bits per pixel a frame at the model's 224 px, mpeg4): "
                           f"below {bitrate.FLOORS['mpeg4']:g}, more than 5% of the shipped model's test frames changed sides")
    # rev56: a predicting codec spends fewer bits a frame at a video rate (x264 CRF 28: 0.071 at 25 frames/s, 0.368 at 4);
    # the floors were measured at 4 frames/s, so only MJPEG (each frame alone) is judged above 6
    assert bitrate.low_bitrate_note(_info("mpeg4", 224, 224), low, 224, 25.0) is None
    assert bitrate.low_bitrate_note(_info("mpeg4", 224, 224), low, 224, None) is None
    assert bitrate.low_bitrate_note(_info("mjpeg", 224, 224), low, 224, 25.0).startswith("/data/x.avi: heavily compressed video")
    assert bitrate.low_bitrate_note(_info("png", 224, 224), DecodeStats(frames_decoded=2, video_bytes=20), 224, 4.0) is None  # no floor
    folder = SourceInfo(path="/data/f", kind="frames", codec="jpg", width=224, height=224, average_fps=None,
                        duration_seconds=None, num_frames_from_header=None, size_bytes=0)
    assert bitrate.bits_per_pixel(folder, DecodeStats(frames_decoded=2, video_bytes=20)) is None


def test_a_low_bitrate_avi_is_said_and_the_demo_clip_is_not(shipped_weights, tmp_path):
    from capsule_triage import RunOptions, load_classifier, load_pipeline, triage_study

    pipeline = load_pipeline("capsule-bleeding")  # the shipped model sees 224 px, the size the floors were measured at
    classifier = load_classifier(pipeline, weights=shipped_weights, device="cpu", backend="torch-fp32")
    assert classifier.config.input_size == 224
    clip = tmp_path / "export.avi"
    with av.open(str(clip), "w") as container:  # MPEG-4 Part 2 at 25 kbit/s: ~0.8 KB a frame at 4 frames/s
        stream = container.add_stream("mpeg4", rate=4)
        stream.width, stream.height, stream.pix_fmt, stream.bit_rate = 224, 224, "yuv420p", 25_000
        for rgb in demo_clip_frames():
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    with av.open(str(clip)) as container:  # the packets' bytes, counted here
        size = sum(p.size for p in container.demux(video=0))
    low = triage_study(clip, pipeline, classifier, RunOptions(out=tmp_path / "low", report=False)).run
    assert low["bits_per_pixel"] == round(size * 8 / (64 * 224 * 224), 4) < bitrate.FLOORS["mpeg4"]
    assert [w for w in low["warnings"] if "heavily compressed" in w] == [
        bitrate.low_bitrate_note(_info("mpeg4", 224, 224, str(clip)), DecodeStats(frames_decoded=64, video_bytes=size), 224, 4.0)]
    assert low["bits_per_model_pixel"] == low["bits_per_pixel"]  # 224 px frames, the model's size
    clean = triage_study(DEMO_CLIP, pipeline, classifier, RunOptions(out=tmp_path / "demo", report=False)).run
    assert clean["bits_per_pixel"] > bitrate.FLOORS["h264"] and not any("heavily compressed" in w for w in clean["warnings"])
    again = encode_clip(demo_clip_frames(), tmp_path / "two_decoders.mp4", options={"crf": "51"})  # in a decoder process, in parts
    parts = triage_study(again, pipeline, classifier, RunOptions(out=tmp_path / "parts", report=False, decoder_processes=2)).run
    with av.open(str(again)) as container:
        size = sum(p.size for p in container.demux(video=0))
    assert parts["decoded_in"] == "process" and parts["bits_per_pixel"] == round(size * 8 / (64 * 224 * 224), 4)
    assert any("heavily compressed video" in w for w in parts["warnings"])
