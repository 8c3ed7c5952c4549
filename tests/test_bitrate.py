"""A heavily compressed video is said (QA 61 M3: low-bitrate AVIs of the same 90 frames flagged 68-74 % against 37 %,
without a word), at floors measured by benchmarks/compression.py."""

from __future__ import annotations

import json

import av
import pytest

from capsule_triage import bitrate
from capsule_triage.frames import DecodeStats, SourceInfo
from conftest import REPO, demo_clip_frames, encode_clip


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
    assert f"below H.264 {floors['h264']:g}, MPEG-4 Part 2 {floors['mpeg4']:g}, MJPEG {floors['mjpeg']:g} bits per pixel" in readme


def test_bits_are_counted_over_what_the_model_sees():
    stats = DecodeStats(frames_decoded=10, video_bytes=10 * 13_000)  # 104,000 bits a frame
    hd = _info("mjpeg", 1280, 720)
    assert bitrate.bits_per_pixel(hd, stats) == pytest.approx(104_000 / (1280 * 720))  # 0.113 of the stored pixels
    assert bitrate.bits_per_model_pixel(hd, stats, 224) == pytest.approx(104_000 / (224 * 224 * 1280 / 720))  # 1.17 at 224 px
    assert bitrate.low_bitrate_note(hd, stats, 224, 1.0) is None
    small = _info("h264", 160, 160)  # enlarged for the model: its own pixels count
    assert bitrate.bits_per_model_pixel(small, DecodeStats(frames_decoded=1, video_bytes=300), 224) == pytest.approx(2400 / 160**2)
    low = DecodeStats(frames_decoded=2, video_bytes=2 * 2000)
    note = bitrate.low_bitrate_note(_info("mjpeg", 224, 224), low, 224, 1.0)
    assert note.startswith("/data/x.avi: heavily compressed video (0.319 bits per pixel a frame at the model's 224 px, mjpeg): "
                           f"below {bitrate.FLOORS['mjpeg']:g}, more than 5% of the shipped model's test frames changed sides")
    # rev56, CI145: a predicting codec's bits a frame follow the content (a stall, black frames, a video rate) as much as
    # the quality, so only MJPEG is judged; and only a study whose frames show a view (black frames cost few bits)
    below_all = DecodeStats(frames_decoded=2, video_bytes=2 * 700)  # 0.112: below every family's floor (review rev57 #5)
    assert bitrate.bits_per_model_pixel(_info("h264", 224, 224), below_all, 224) < min(bitrate.FLOORS.values())
    assert bitrate.low_bitrate_note(_info("h264", 224, 224), below_all, 224, 1.0) is None
    assert bitrate.low_bitrate_note(_info("mpeg4", 224, 224), below_all, 224, 1.0) is None
    assert bitrate.low_bitrate_note(_info("mjpeg", 224, 224), below_all, 224, 1.0) is not None
    assert bitrate.low_bitrate_note(_info("mjpeg", 224, 224), low, 224, 0.9) is None
    assert bitrate.low_bitrate_note(_info("mjpeg", 224, 224), low, 224, 0.95) == note
    folder = SourceInfo(path="/data/f", kind="frames", codec="jpg", width=224, height=224, average_fps=None,
                        duration_seconds=None, num_frames_from_header=None, size_bytes=0)
    assert bitrate.bits_per_pixel(folder, DecodeStats(frames_decoded=2, video_bytes=20)) is None


def _mjpeg(frames, path, quality: int):
    with av.open(str(path), "w") as container:  # qscale 31: ~0.35 bits per pixel at 224 px, below MJPEG's floor
        stream = container.add_stream("mjpeg", rate=4)
        stream.width, stream.height, stream.pix_fmt = 224, 224, "yuvj420p"
        stream.codec_context.qmin = stream.codec_context.qmax = quality
        for rgb in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    with av.open(str(path)) as container:  # the packets' bytes, counted here
        return sum(p.size for p in container.demux(video=0))


def test_a_coarse_mjpeg_export_is_said_and_fine_or_predicted_ones_are_not(shipped_weights, tmp_path):
    from capsule_triage import RunOptions, load_classifier, load_pipeline, triage_study

    pipeline = load_pipeline("capsule-bleeding")  # the shipped model sees 224 px, the size the floors were measured at
    classifier = load_classifier(pipeline, weights=shipped_weights, device="cpu", backend="torch-fp32")
    assert classifier.config.input_size == 224
    frames = demo_clip_frames()
    size = _mjpeg(frames, tmp_path / "coarse.avi", 31)
    low = triage_study(tmp_path / "coarse.avi", pipeline, classifier, RunOptions(out=tmp_path / "low", report=False)).run
    assert low["bits_per_pixel"] == low["bits_per_model_pixel"] == round(size * 8 / (64 * 224 * 224), 4) < bitrate.FLOORS["mjpeg"]
    assert [w for w in low["warnings"] if "heavily compressed" in w] == [bitrate.low_bitrate_note(
        _info("mjpeg", 224, 224, str(tmp_path / "coarse.avi")), DecodeStats(frames_decoded=64, video_bytes=size), 224, 1.0)]
    _mjpeg(frames, tmp_path / "fine.avi", 2)
    fine = triage_study(tmp_path / "fine.avi", pipeline, classifier, RunOptions(out=tmp_path / "fine", report=False)).run
    assert fine["bits_per_pixel"] > bitrate.FLOORS["mjpeg"] and not any("heavily compressed" in w for w in fine["warnings"])
    coarse = encode_clip(frames, tmp_path / "two_decoders.mp4", options={"crf": "51"})  # H.264: recorded, not judged
    parts = triage_study(coarse, pipeline, classifier, RunOptions(out=tmp_path / "parts", report=False, decoder_processes=2)).run
    with av.open(str(coarse)) as container:
        size = sum(p.size for p in container.demux(video=0))
    assert parts["decoded_in"] == "process" and parts["bits_per_pixel"] == round(size * 8 / (64 * 224 * 224), 4)  # in parts
    assert parts["bits_per_pixel"] < bitrate.FLOORS["h264"] and not any("heavily compressed" in w for w in parts["warnings"])


def test_a_folder_of_coarse_jpeg_exports_is_said_as_an_mjpeg_video_is(shipped_weights, tmp_path):
    """A hospital's export of frames as JPEG files (each coded alone, as MJPEG's frames; MJPEG's floor was measured on
    JPEG files) was not judged at all: the same coarse frames in an AVI got the warning, in a folder nothing."""
    import cv2

    from capsule_triage import RunOptions, load_classifier, load_pipeline, triage_study

    pipeline = load_pipeline("capsule-bleeding")
    classifier = load_classifier(pipeline, weights=shipped_weights, device="cpu", backend="torch-fp32")
    frames = demo_clip_frames()[:32]
    runs = {}
    for quality, decode_in in ((8, "process"), (95, "thread")):
        folder = tmp_path / f"q{quality}"
        folder.mkdir()
        for i, rgb in enumerate(frames):
            cv2.imwrite(str(folder / f"{i:03d}.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        size = sum(path.stat().st_size for path in folder.iterdir())
        run = triage_study(folder, pipeline, classifier, RunOptions(out=tmp_path / f"out{quality}", report=False,
                                                                    folder_fps=4.0, decode_in=decode_in)).run
        assert run["decoded_in"] == decode_in and run["bits_per_pixel"] == round(size * 8 / (32 * 224 * 224), 4), quality
        runs[quality] = run
    coarse = [w for w in runs[8]["warnings"] if "heavily compressed" in w]
    assert runs[8]["bits_per_model_pixel"] == runs[8]["bits_per_pixel"] < bitrate.FLOORS["mjpeg"] < runs[95]["bits_per_pixel"]
    assert coarse == [f"{tmp_path / 'q8'}: heavily compressed JPEG images ({runs[8]['bits_per_model_pixel']:.3f} bits per pixel a "
                      f"frame at the model's 224 px): below {bitrate.FLOORS['mjpeg']:g}, more than 5% of the shipped model's "
                      "test frames changed sides of its threshold, most of them to flagged (benchmarks/README.md, compression); "
                      "expect frames flagged for the artefacts, and export the study at a higher quality if the recorder allows"]
    assert not any("heavily compressed" in w for w in runs[95]["warnings"])
    mixed = tmp_path / "q8"  # one PNG among the JPEGs: the folder's bits are not its JPEGs' alone, so it is not judged
    cv2.imwrite(str(mixed / "000.png"), cv2.cvtColor(frames[0], cv2.COLOR_RGB2BGR))
    (mixed / "000.jpg").unlink()
    run = triage_study(mixed, pipeline, classifier, RunOptions(out=tmp_path / "mixed", report=False, folder_fps=4.0)).run
    assert run["bits_per_pixel"] is None and not any("heavily compressed" in w for w in run["warnings"])


def test_a_folder_without_a_shape_from_its_first_images_is_not_judged():
    """Review rev58 #1: a folder whose first images did not decode is probed without a shape (0 x 0); its later JPEGs
    were counted, and the bits per model pixel divided by its zero side: the study failed after it was scored."""
    folder = SourceInfo(path="/data/f", kind="frames", codec="jpg", width=0, height=0, average_fps=None,
                        duration_seconds=None, num_frames_from_header=None, size_bytes=0)
    stats = DecodeStats(frames_decoded=4)
    for _ in range(4):
        stats.saw_jpeg(2000, 224, 224)
    assert bitrate.bits_per_pixel(folder, stats) == pytest.approx(2000 * 8 / (224 * 224))
    assert bitrate.bits_per_model_pixel(folder, stats, 224) is None and bitrate.low_bitrate_note(folder, stats, 224, 1.0) is None
