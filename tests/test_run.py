"""End to end: `triage run` as a subprocess on real clips, outputs read back with pyarrow."""

from __future__ import annotations

import csv
import hashlib
import json
import shlex

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import DEMO_CLIP, MIXED_CLIP, REPO, VIDEOS, encode_clip, mixed_clip_frames, needs_shared, triage, turned_clockwise, write_frame_folder

pytestmark = needs_shared


@pytest.fixture(scope="module")
def mixed_run(probe_weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "mixed"
    result = triage("run", MIXED_CLIP, "--weights", probe_weights, "--out", out, "--quiet")
    assert result.returncode == 0, result.stderr
    return out, result


def test_frames_parquet_has_one_row_per_frame_in_quarter_second_steps(mixed_run):
    out, _ = mixed_run
    frames = pq.read_table(out / "frames.parquet")
    assert frames.num_rows == 96
    assert frames.column_names == ["frame_index", "pts_seconds", "score", "prob_non-bleeding", "prob_bleeding",
                                   "smoothed_score", "flagged", "event_id", "has_view", "score_reused"]
    assert not any(frames["score_reused"].to_pylist())  # every frame scored (no --skip-duplicates)
    pts = frames["pts_seconds"].to_numpy()
    np.testing.assert_allclose(np.diff(pts), 0.25, atol=1e-6)
    np.testing.assert_array_equal(frames["frame_index"].to_numpy(), np.arange(96))
    assert frames["has_view"].to_pylist() == [True] * 96  # every real capsule frame shows its view
    probs = np.stack([frames["prob_non-bleeding"].to_numpy(), frames["prob_bleeding"].to_numpy()], 1)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(frames["score"].to_numpy(), probs[:, 1], atol=1e-6)
    meta = frames.schema.metadata
    assert meta[b"schema_version"] == b"2" and meta[b"model"] == b"test-probe-lite0" and len(meta[b"input_sha256"]) == 64
    run = json.loads((out / "run.json").read_text())  # QA 70 #1: the results version, thresholds and options' digest too
    rank = run["parameters"]["rank"]
    assert (meta[b"results_version"], meta[b"backend"], meta[b"enter_threshold"], meta[b"leave_threshold"]) == (
        b"4", run["model"]["backend"].encode(), repr(float(rank["enter_threshold"])).encode(), repr(float(rank["leave_threshold"])).encode())
    assert meta[b"parameters_sha256"] == hashlib.sha256(json.dumps(run["parameters"], sort_keys=True).encode()).hexdigest().encode()
    config = hashlib.sha256(json.dumps(run["model"]["config"], sort_keys=True).encode()).hexdigest().encode()
    assert meta[b"model_config_sha256"] == config  # QA 93 #5: the preprocessing as it ran (a loose file's is its preset's)


def test_events_are_well_formed_ranked_and_find_the_bleeding_segments(mixed_run):
    out, _ = mixed_run
    events = pq.read_table(out / "events.parquet").to_pylist()
    frames = pq.read_table(out / "frames.parquet").to_pydict()
    assert events, "the mixed clip has two bleeding segments"
    peaks = [e["peak_score"] for e in events]
    assert peaks == sorted(peaks, reverse=True)
    for rank, e in enumerate(events):
        assert e["rank"] == e["event_id"] == rank
        assert e["start_seconds"] <= e["peak_seconds"] <= e["end_seconds"]
        members = [i for i, ev in enumerate(frames["event_id"]) if ev == e["event_id"]]
        assert e["frame_count"] == len(members) and members == list(range(members[0], members[-1] + 1))
        assert frames["frame_index"][members[0]] == e["start_frame"] and frames["frame_index"][members[-1]] == e["end_frame"]
        assert e["dominant_class"] == "bleeding"
    assert frames["flagged"] == [ev >= 0 for ev in frames["event_id"]]
    # Ground truth: the top two events overlap the two bleeding segments (17-46 and 63-95).
    labels = [r["label"] for r in csv.DictReader(open(VIDEOS / "wcebleedgen_mixed_triage_4fps_frames.csv"))]
    for e in events[:2]:
        inside = labels[e["start_frame"] : e["end_frame"] + 1]
        assert inside.count("bleeding") > 0.8 * len(inside)


def test_thumbnails_exist_and_decode_at_source_resolution(mixed_run):
    out, _ = mixed_run
    for table in ("events.parquet", "top_frames.parquet"):
        for row in pq.read_table(out / table).to_pylist():
            image = cv2.imread(str(out / row["thumbnail"]))
            assert image is not None and image.shape == (224, 224, 3)
    top = pq.read_table(out / "top_frames.parquet").to_pylist()
    assert {r["dominant_class"] for r in top} == {"bleeding"}  # QA 71 #5: no class before
    times = [r["pts_seconds"] for r in top]
    assert all(abs(a - b) >= 5.0 for i, a in enumerate(times) for b in times[i + 1 :])


def test_run_json_records_provenance(mixed_run):
    out, result = mixed_run
    run = json.loads((out / "run.json").read_text())
    assert run["frames_decoded"] == 96 and run["frames_skipped"] == 0
    assert run["input"]["size_bytes"] == MIXED_CLIP.stat().st_size and len(run["input"]["sha256"]) == 64
    assert run["source"]["codec"] == "h264" and run["source"]["average_fps"] == 4.0
    untagged = "matrix untagged, read as BT.601 (FFmpeg's convention), range untagged, read as limited"
    assert run["source"]["colours"] == untagged  # the clip is written untagged from RGB (conftest.encode_clip)
    assert f"<dt>Colours</dt><dd>{untagged.replace(chr(39), '&#x27;')}</dd>" in (out / "report.html").read_text()
    assert run["model"]["architecture"] == "tf_efficientnet_lite0" and len(run["model"]["weights_sha256"]) == 64
    assert set(run["parameters"]["rank"]) >= {"smooth_seconds", "enter_threshold", "leave_threshold", "merge_gap_seconds", "min_event_seconds", "top_k", "nms_seconds"}
    assert run["versions"]["torch"].startswith("2.14.1") and run["fps"] > 0
    stages = run["stage_seconds"]  # where the wall time went: they add up to it
    assert set(stages) == {"decode_and_score", "thumbnails", "other"} and min(stages.values()) >= 0
    assert abs(sum(stages.values()) - run["wall_seconds"]) < 0.005
    assert run["scoring_fps"] == pytest.approx(96 / stages["decode_and_score"], rel=0.01) and run["scoring_fps"] > run["fps"]
    assert len(list((out / "thumbnails").glob("*.jpg"))) > 0 and stages["thumbnails"] > 0
    assert "96 frames" in result.stdout and "events" in result.stdout and "% of frames flagged" in result.stdout
    from capsule_triage.report_svg import fmt_percent  # rev107 #5: as the page's Flagged tile says it (it said 52.0% to

    flagged = fmt_percent(100 * run["flagged_frames"] / 96)  # the page's 52.1% of 26,025 of 50,000 frames)
    assert f", {flagged} of frames flagged, " in result.stdout and f'<div class="v">{flagged}</div>' in (out / "report.html").read_text()


def test_existing_output_needs_force(mixed_run, probe_weights):
    out, _ = mixed_run
    before = (out / "frames.parquet").read_bytes()
    described = [pq.read_schema(out / name).metadata for name in ("frames.parquet", "events.parquet", "top_frames.parquet")]
    refused = triage("run", MIXED_CLIP, "--weights", probe_weights, "--out", out)
    assert refused.returncode == 2 and refused.stderr.strip() == f"Error: {out}: output already exists; use --force to replace it"
    assert (out / "frames.parquet").read_bytes() == before
    forced = triage("run", MIXED_CLIP, "--weights", probe_weights, "--out", out, "--force", "--threshold", "0.99")
    assert forced.returncode == 0, forced.stderr
    assert json.loads((out / "run.json").read_text())["parameters"]["rank"]["enter_threshold"] == 0.99
    for name, meta in zip(("frames.parquet", "events.parquet", "top_frames.parquet"), described):  # QA 70 #1: named alike before
        now = pq.read_schema(out / name).metadata
        assert now[b"enter_threshold"] == b"0.99" and now[b"parameters_sha256"] != meta[b"parameters_sha256"], name
        assert {k: v for k, v in now.items() if k not in (b"enter_threshold", b"leave_threshold", b"parameters_sha256")} == {
            k: v for k, v in meta.items() if k not in (b"enter_threshold", b"leave_threshold", b"parameters_sha256")}
    assert not list(out.parent.glob(".mixed*")), "no staging or replaced folders left behind"


def test_frames_that_step_back_or_repeat_a_time_are_said(tmp_path, random_weights):
    """QA 110 #2: a video whose times went back 0.5 s part-way (within the 1 s a decoder may reorder), or repeated one,
    was scored without a word, two frames at 7.0 s interleaved in frames.parquet: each is placed by its time, and said."""
    from fractions import Fraction

    import av

    stored = encode_clip([np.full((32, 32, 3), 10 * i, np.uint8) for i in range(12)], tmp_path / "stored.mkv", codec="mjpeg")
    times = [0, 250, 500, 750, 1000, 1250, 1500, 1000, 1750, 2000, 2000, 2250]  # frame 7 back to 1.0 s; frame 10 at 2.0 s again
    with av.open(str(stored)) as source, av.open(str(tmp_path / "retimed.mkv"), "w") as out:
        stream = out.add_stream_from_template(source.streams.video[0])
        stream.time_base = Fraction(1, 1000)
        for k, packet in enumerate(p for p in source.demux(video=0) if p.size):
            copy = av.Packet(bytes(packet))
            copy.stream, copy.time_base, copy.pts, copy.dts, copy.is_keyframe = stream, Fraction(1, 1000), times[k], k, True
            out.mux(copy)
    done = triage("run", tmp_path / "retimed.mkv", "--weights", random_weights, "--no-report", "-o", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert (f"Warning: {tmp_path / 'retimed.mkv'}: 1 frame timed before the frame decoded ahead of it (first: frame 7 at 1.000 s, "
            "after 1.500 s); 1 frame at the time of the frame before it (first: frame 10 at 2.000 s): each placed by its time, as "
            "the file gives it; its timestamps are damaged, or two recordings were joined (re-mux it with fresh timestamps if the "
            "frames' order matters)") in done.stderr.splitlines(), done.stderr
    frames = pq.read_table(tmp_path / "out" / "frames.parquet").to_pydict()
    assert frames["pts_seconds"] == sorted(t / 1000 for t in times) and frames["frame_index"][:6] == [0, 1, 2, 3, 4, 7]
    assert "timed before" not in triage("run", stored, "--weights", random_weights, "--no-report", "-o", tmp_path / "o2").stderr
    rng = np.random.default_rng(0)  # rev102 #1: two decoders' parts arrive interleaved; a well-formed file says nothing
    moving = [np.roll(rng.integers(0, 255, (48, 48, 3), np.uint8), i, axis=1) for i in range(240)]
    parts = encode_clip(moving, tmp_path / "parts.mp4", options={"g": "24", "bf": "2", "crf": "30"})
    done = triage("run", parts, "--weights", random_weights, "--no-report", "--decoders", "2", "-o", tmp_path / "o3")
    assert done.returncode == 0 and "timed before" not in done.stderr and "at the time of" not in done.stderr, done.stderr
    assert json.loads((tmp_path / "o3" / "run.json").read_text())["decoder_processes"] == 2


def test_default_output_is_beside_the_input(tmp_path, random_weights):
    clip = tmp_path / "study one.mp4"
    clip.write_bytes(MIXED_CLIP.read_bytes())
    result = triage("run", clip.name, "--weights", random_weights, "--quiet", cwd=tmp_path)  # a path relative to the cwd
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "study one_triage" / "frames.parquet").exists()
    run = json.loads((tmp_path / "study one_triage" / "run.json").read_text())
    assert run["input"]["path"] == run["source"]["path"] == str(clip)  # both absolute: the run.json says where it was
    import av

    with av.open(str(MIXED_CLIP)) as container:  # QA 110 #4: a one-frame study said "1 frames (0 skipped)"
        first = next(container.decode(video=0)).to_ndarray(format="rgb24")
    one = triage("run", encode_clip([first], tmp_path / "one.mp4"), "--weights", random_weights, "--no-report")
    assert one.returncode == 0 and one.stdout.startswith("1 frame (0 skipped), "), one.stdout + one.stderr


def test_a_header_without_the_streams_start_records_the_first_frames_time(tmp_path, random_weights):
    """QA 15: a one-frame MKV's header gives no start time; run.json said start_seconds null."""
    import av

    from capsule_triage import RunOptions, load_classifier, load_pipeline, triage_study

    with av.open(str(DEMO_CLIP)) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="rgb24")
    clip = encode_clip([frame], tmp_path / "one.mkv")
    pipeline = load_pipeline("capsule-bleeding")
    result = triage_study(clip, pipeline, load_classifier(pipeline, weights=random_weights, device="cpu"), RunOptions(out=tmp_path / "o"))
    assert result.frames == 1 and result.run["source"]["start_seconds"] == 0.0


def test_run_json_gives_the_rate_the_frames_times_measure_not_a_headers_nominal_one(tmp_path, random_weights):
    """QA 29 (left for later): run.json's only rate was the header's, and a Matroska file's is the encoder's
    nominal one: 4 frames/s for an adaptive-rate capsule of 5 and 2 frames/s steps."""
    import av

    from capsule_triage import RunOptions, load_classifier, load_pipeline, triage_study
    from capsule_triage.completeness import measured_rate

    with av.open(str(DEMO_CLIP)) as container:
        frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(40), container.decode(video=0))]
    steps = np.random.default_rng(1).choice([2, 5], 39, p=[0.6, 0.4])  # in tenths of a second: 5 frames/s moving, 2 resting
    ticks = [0, *np.cumsum(steps).tolist()]
    clip = encode_clip(frames, tmp_path / "adaptive.mkv", fps=4, pts=ticks, time_base=(1, 10))
    pipeline = load_pipeline("capsule-bleeding")
    classifier = load_classifier(pipeline, weights=random_weights, device="cpu", backend="torch-fp32")
    run = triage_study(clip, pipeline, classifier, RunOptions(out=tmp_path / "o", report=False)).run
    assert run["source"]["average_fps"] == 4.0  # the header's: the encoder's nominal rate
    assert run["frame_rate"] == {"average_fps": round(39 / (ticks[-1] / 10), 4), "varies": True, "slowest_fps": 2.0, "fastest_fps": 5.0}
    assert measured_rate(np.arange(30) / 25) == {"average_fps": 25.0, "varies": False, "slowest_fps": 25.0, "fastest_fps": 25.0}
    assert measured_rate(np.arange(5) / 25)["fastest_fps"] is None and measured_rate([3.0]) is None and measured_rate([1.0, 1.0]) is None
    gapped = np.r_[np.arange(10), np.arange(33, 43)] / 2  # QA 100 #3: 2 frames/s with one gap of 11.5 s read as 0.6 to 2.0
    assert measured_rate(gapped) == {"average_fps": round(19 / 21, 4), "varies": False, "slowest_fps": 2.0, "fastest_fps": 2.0}


def test_run_json_gives_the_studys_duration_from_its_frames(random_weights, tmp_path):
    """QA 63 #1: run.json's only duration was the container's: for the same 40 frames at 5.0-31.3 s it said 31.58 (mkv,
    its end time), 23.58 (mp4) and 26.5 (ts), while the review page said 28.3 s. Now `duration_seconds` is the frames'."""
    import av

    from capsule_triage import RunOptions, load_classifier, load_pipeline, triage_study

    with av.open(str(DEMO_CLIP)) as container:
        frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(40), container.decode(video=0))]
    pipeline = load_pipeline("capsule-bleeding")
    classifier = load_classifier(pipeline, weights=random_weights, device="cpu", backend="torch-fp32")
    for suffix in ("mkv", "mp4"):
        clip = encode_clip(frames, tmp_path / f"late.{suffix}", fps=4, pts=[20 + i for i in range(40)], time_base=(1, 4))
        result = triage_study(clip, pipeline, classifier, RunOptions(out=tmp_path / suffix))
        assert result.run["source"]["start_seconds"] == 5.0 and result.run["duration_seconds"] == 10.0  # 40 frames at 4/s
        assert "<dt>Duration</dt><dd>10.0 s</dd>" in (tmp_path / suffix / "report.html").read_text()


def test_a_turned_video_says_so_beside_its_stored_size(random_weights, tmp_path):
    """QA 61 L3: run.json and the review page gave a rotated video's stored size (64 x 32 for frames shown 32 x 64)
    and nothing recorded that its frames had been turned upright by its display matrix."""
    from capsule_triage import RunOptions, load_classifier, load_pipeline, triage_study

    turned_clockwise(encode_clip([np.full((32, 64, 3), 90, np.uint8)] * 6, tmp_path / "stored.mp4"), tmp_path / "turned.mp4")
    encode_clip([np.full((32, 64, 3), 90, np.uint8)] * 6, tmp_path / "mirrored.mp4", display={"degrees": 90, "hflip": True})
    pipeline = load_pipeline("capsule-bleeding")
    classifier = load_classifier(pipeline, weights=random_weights, device="cpu", backend="torch-fp32")
    for name, turned, mirrored, shown in (("turned.mp4", [90], [], " as stored, shown turned 90\u00b0 clockwise"),
                                          ("stored.mp4", [], [], ""),
                                          ("mirrored.mp4", [270], ["left to right"], " as stored, shown turned 270\u00b0 clockwise and mirrored left to right")):
        run = triage_study(tmp_path / name, pipeline, classifier, RunOptions(out=tmp_path / f"out_{name}")).run
        assert (run["source"]["width"], run["source"]["height"], run["frames_turned_clockwise_degrees"]) == (64, 32, turned)
        assert run["frames_mirrored"] == mirrored  # QA 87 #1
        page = (tmp_path / f"out_{name}" / "report.html").read_text()
        said = f"64 \u00d7 32 px{shown} (its display matrix)"
        assert (said in page) is bool(turned) and "64 \u00d7 32 px" in page
        # QA 87 #3: the wide-frames Warning gave the stored size of frames scored turned
        wide = [line for line in run["warnings"] if "border 'circle'" in line]
        assert len(wide) == 1 and f"frames of {'32x64' if turned else '64x32'}:" in wide[0], wide


def test_mp4_avi_and_png_folder_give_the_same_scores(tmp_path, shipped_weights):
    """The same 48 frames as H.264 mp4, MJPEG avi and a PNG folder, scored by the shipped model:
    lossy codecs move scores a little; tolerance against the lossless PNG folder: mean |delta score|
    <= 0.02, the same frames above the model's operating threshold but for at most 2, and max
    |delta score| <= 0.25. The max is the model's sensitivity to compression on its least certain
    frame: 0.163 (mp4) / 0.181 (avi) for the weights trained with H.264 round trips (one bleeding
    frame, 0.787 as PNG, 0.95-0.97 compressed; no flag changes), 0.048 / 0.045 for the weights before."""
    from capsule_triage import RunOptions, load_classifier, load_pipeline, triage_study

    frames = mixed_clip_frames()[10:58]
    sources = {
        "mp4": encode_clip(frames, tmp_path / "clip.mp4"),
        "avi": encode_clip(frames, tmp_path / "clip.avi", codec="mjpeg"),
        "png": write_frame_folder(frames, tmp_path / "frames"),
    }
    preset = load_pipeline("capsule-bleeding")
    classifier = load_classifier(preset, weights=str(shipped_weights))
    scores = {}
    for name, source in sources.items():
        result = triage_study(source, preset, classifier, RunOptions(out=tmp_path / f"out_{name}", folder_fps=4.0 if source.is_dir() else None, report=False))
        table = pq.read_table(result.out_dir / "frames.parquet")
        assert table.num_rows == 48
        np.testing.assert_allclose(table["pts_seconds"].to_numpy(), np.arange(48) * 0.25, atol=1e-6)
        scores[name] = table["score"].to_numpy()
    assert np.ptp(scores["png"]) > 0.5, "the probe model must separate these frames for the comparison to mean anything"
    threshold = classifier.config.threshold
    for name in ("mp4", "avi"):
        delta = np.abs(scores[name] - scores["png"])
        assert delta.max() <= 0.25 and delta.mean() <= 0.02, (name, delta.max(), delta.mean())
        assert ((scores[name] >= threshold) != (scores["png"] >= threshold)).sum() <= 2, name


def test_gastroscope_preset_with_fov_crop_on_a_720p_clip_with_audio(tmp_path):
    """The seed-A preset (3 classes, field-of-view crop) on a real 1280x720 endoscope clip with an
    audio track, with a tiny random 3-class model standing in for trained weights."""
    import torch

    from capsule_triage.model_config import ModelConfig
    from capsule_triage.weights import create_model, save_weights

    torch.manual_seed(0)
    config = ModelConfig(architecture="test_resnet", class_names=["GC", "GU", "CG"], abnormal_classes=["GC", "GU"],
                         input_size=64, border="fov", border_radius=1.0, name="test-fov")
    weights = save_weights(tmp_path / "w", create_model(config), config)
    out = tmp_path / "out"
    result = triage("run", VIDEOS / "rvimlab_laparoscopic_endo_10s.mp4", "--pipeline", "gastric-3class-resnet50",
                    "--weights", weights, "--out", out, "--quiet", "--no-report")
    assert result.returncode == 0, result.stderr
    frames = pq.read_table(out / "frames.parquet")
    assert frames.num_rows == 250 and "prob_GU" in frames.column_names
    np.testing.assert_allclose(np.diff(frames["pts_seconds"].to_numpy()), 0.04, atol=1e-3)
    score = frames["score"].to_numpy()
    np.testing.assert_allclose(score, frames["prob_GC"].to_numpy() + frames["prob_GU"].to_numpy(), atol=1e-5)
    assert not (out / "report.html").exists()



def test_thumbnails_of_a_field_of_view_model_show_the_view_not_the_text_beside_it(tmp_path):
    """QA 26: with a field-of-view model, thumbnails (and so the shared review page) were whole frames,
    with the burned-in patient name and id beside the view; the model never saw them."""
    import av
    import torch

    from capsule_triage.model_config import ModelConfig
    from capsule_triage.weights import create_model, save_weights

    with av.open(str(DEMO_CLIP)) as container:
        views = [f.to_ndarray(format="rgb24") for f, _ in zip(container.decode(video=0), range(16))]
    side = views[0].shape[0]
    frames = []
    for view in views:  # the view left of centre in a wide frame, a block of "text" at the top right, 120 px from it
        frame = np.zeros((side, side * 2, 3), np.uint8)
        frame[:, 40 : 40 + side] = view
        frame[20:60, side + 160 : side + 300] = 255
        frames.append(frame)
    clip = encode_clip(frames, tmp_path / "wide.mp4")
    torch.manual_seed(0)
    config = ModelConfig(architecture="test_resnet", class_names=["chronic-gastritis", "early-gastric-cancer"], abnormal_classes=["early-gastric-cancer"], input_size=64,
                         border="fov", border_radius=1.0, name="test-fov")
    weights = save_weights(tmp_path / "w", create_model(config), config)
    done = triage("run", clip, "-p", "gastric-ebc-bit-r101x3", "--weights", weights, "--out", tmp_path / "o", "--quiet", "--no-report")
    assert done.returncode == 0, done.stderr
    thumbs = sorted((tmp_path / "o" / "thumbnails").glob("*.jpg"))
    assert thumbs
    for path in thumbs:
        thumb = cv2.imread(str(path))
        index = int(path.stem.split("_")[1])
        assert abs(thumb.shape[0] - side) <= 4 and abs(thumb.shape[1] - side) <= 4, thumb.shape  # the view's square, not 2:1
        view = cv2.cvtColor(views[index], cv2.COLOR_RGB2BGR)[: thumb.shape[0], : thumb.shape[1]]
        assert np.abs(thumb.astype(int) - view.astype(int)).mean() < 12  # the view itself (JPEG and H.264 apart)


def test_wide_frames_under_a_capsule_model_are_named(tmp_path, random_weights):
    """QA 26: 16:9 gastroscope video under the default (capsule, centred circle) preset flagged most normal
    frames, the view off centre cut by the centred square, without a word."""
    import av

    with av.open(str(DEMO_CLIP)) as container:
        views = [f.to_ndarray(format="rgb24") for f, _ in zip(container.decode(video=0), range(8))]
    side = views[0].shape[0]
    wide = encode_clip([np.pad(v, ((0, 0), (0, side * 3 // 4), (0, 0))) for v in views], tmp_path / "wide.mp4")  # 7:4
    done = triage("run", wide, "--weights", random_weights, "--out", tmp_path / "w", "--quiet", "--no-report")
    line = (f"{wide}: frames of {side + side * 3 // 4}x{side}: this model (border 'circle', made for capsule frames) scores only the "
            f"centred {side}x{side} square masked to a circle, so a view off centre is cut; for gastroscope video use a preset with "
            "border 'fov' (gastric-3class-resnet50, gastric-ebc-bit-r101x3: their weights are not shipped; each preset names the "
            "`triage train` command that makes them, or give --weights)")
    assert done.returncode == 0 and f"Warning: {line}" in done.stderr.splitlines(), done.stderr
    run = json.loads((tmp_path / "w" / "run.json").read_text())
    assert run["warnings"] == [line]
    # QA 52: what a re-run needs: the command line and the preset's bytes (run.json named the preset by its path only)
    assert shlex.split(run["command"]) == ["triage", "run", str(wide), "--weights", str(random_weights), "--out", str(tmp_path / "w"),
                                           "--quiet", "--no-report"]
    preset = REPO / "pipelines" / "capsule-bleeding.toml"
    assert run["pipeline"]["source"] == str(preset) and run["pipeline"]["sha256"] == hashlib.sha256(preset.read_bytes()).hexdigest()
    square = triage("run", DEMO_CLIP, "--weights", random_weights, "--out", tmp_path / "s", "--quiet", "--no-report")
    assert square.returncode == 0 and "frames of" not in square.stderr, square.stderr


def test_frames_far_smaller_than_the_model_s_input_are_named(tmp_path, random_weights):
    """QA 48: a 16 x 16 video was enlarged 14x to the model's input and scored without a word (a preview or
    thumbnail export, not the recording). The random model reads 64 px: 24 px frames are enlarged 2.7x, 32 px
    ones exactly 2x (not named)."""
    import av

    with av.open(str(DEMO_CLIP)) as container:
        views = [f.to_ndarray(format="rgb24") for f, _ in zip(container.decode(video=0), range(8))]
    tiny = encode_clip([cv2.resize(v, (24, 24), interpolation=cv2.INTER_AREA) for v in views], tmp_path / "tiny.mp4")
    done = triage("run", tiny, "--weights", random_weights, "--out", tmp_path / "t", "--quiet", "--no-report")
    line = (f"{tiny}: frames of 24x24: this model reads 64x64, so each frame is enlarged 2.67x and scored on detail it does "
            "not hold; score the original recording, not a preview or thumbnail export")
    assert done.returncode == 0 and f"Warning: {line}" in done.stderr.splitlines(), done.stderr
    assert json.loads((tmp_path / "t" / "run.json").read_text())["warnings"] == [line]
    small = encode_clip([cv2.resize(v, (32, 32), interpolation=cv2.INTER_AREA) for v in views], tmp_path / "small.mp4")
    done = triage("run", small, "--weights", random_weights, "--out", tmp_path / "s", "--quiet", "--no-report")
    assert done.returncode == 0 and "enlarged" not in done.stderr, done.stderr
    # rev43: a frame folder's images may differ in size: the smallest is named, wherever it is in the folder
    sizes = [200, 200, 30, 200, 20, 200, 200, 200]
    folder = write_frame_folder([cv2.resize(v, (n, n), interpolation=cv2.INTER_AREA) for v, n in zip(views, sizes)], tmp_path / "mixed")
    done = triage("run", folder, "--fps", "4", "--weights", random_weights, "--out", tmp_path / "m", "--quiet", "--no-report",
                  "--decode-in", "process")
    line = (f"{folder}: images as small as 20x20 (frame4.png): this model reads 64x64, so such an image is enlarged 3.2x and "
            "scored on detail it does not hold; score the original recording, not a preview or thumbnail export")
    assert done.returncode == 0 and f"Warning: {line}" in done.stderr.splitlines(), done.stderr
    folder = write_frame_folder([cv2.resize(v, (200, 200), interpolation=cv2.INTER_AREA) for v in views], tmp_path / "large")
    done = triage("run", folder, "--fps", "4", "--weights", random_weights, "--out", tmp_path / "l", "--quiet", "--no-report")
    assert done.returncode == 0 and "enlarged" not in done.stderr, done.stderr


def test_a_frame_folder_s_outputs_and_pages_name_each_frame_s_image(tmp_path, shipped_weights):
    """QA 34: a frame folder's cards, event pages and tables said only "frame 36" (its place in the sorted folder),
    so the reviewer had to sort the folder and count to find the image."""
    from capsule_triage import RunOptions, load_classifier, load_pipeline, triage_study

    folder = write_frame_folder(mixed_clip_frames()[:40], tmp_path / "frames", pattern="img_{}")  # natural order: img_2 before img_10
    preset = load_pipeline("capsule-bleeding")
    result = triage_study(folder, preset, load_classifier(preset, weights=str(shipped_weights)), RunOptions(out=tmp_path / "out", folder_fps=4.0))
    frames, events, top = (pq.read_table(result.out_dir / name) for name in ("frames.parquet", "events.parquet", "top_frames.parquet"))
    names = frames["source_file"].to_pylist()
    assert names == [f"img_{i}.png" for i in frames["frame_index"].to_pylist()] and names[:3] == ["img_0.png", "img_1.png", "img_2.png"]
    assert events.num_rows >= 1 and events["peak_file"].to_pylist() == [f"img_{i}.png" for i in events["peak_frame"].to_pylist()]
    assert top["file"].to_pylist() == [f"img_{i}.png" for i in top["frame_index"].to_pylist()]
    page = (result.out_dir / "report" / "event-0001.html").read_text()
    peak = events["peak_frame"][0].as_py()
    assert f"Peak frame {peak}, img_{peak}.png at" in page and "<th>file</th>" in page and f"<td>img_{peak}.png</td>" in page
    assert f"img_{peak}.png" in (result.out_dir / "report.html").read_text()


def test_a_12_bit_frame_folder_scores_as_its_8_bit_export(tmp_path, random_weights):
    """QA 53: 12-bit values in 16-bit PNGs were read as 16-bit: nearly black frames, scores of a black study, 0 events,
    exit 0 without a word. Now the same scores as the 8-bit export of the same frames, and the guessed depth is named
    (read in the decoder process: its note comes back with its counters)."""
    import av

    with av.open(str(DEMO_CLIP)) as container:
        views = [f.to_ndarray(format="rgb24") for f, _ in zip(container.decode(video=0), range(8))]
    eight = write_frame_folder(views, tmp_path / "eight")
    twelve = tmp_path / "twelve"
    twelve.mkdir()
    for path in sorted(eight.iterdir()):
        rgb = cv2.imread(str(path))
        cv2.imwrite(str(twelve / path.name), (rgb.astype(np.uint32) * 4095 // 255).astype(np.uint16))
    runs = {}
    for name, folder in (("eight", eight), ("twelve", twelve)):
        done = triage("run", folder, "--fps", "4", "--weights", random_weights, "--out", tmp_path / f"o{name}", "--quiet",
                      "--no-report", "--decode-in", "process")
        assert done.returncode == 0, done.stderr
        runs[name] = done, pq.read_table(tmp_path / f"o{name}" / "frames.parquet").column("score").to_numpy()
    line = (f"{twelve}: 16-bit images (e.g. frame0.png) hold values only up to 4,095: read as 12-bit data (a camera's, not "
            "stretched to 16 bits)")
    assert f"Warning: {line}" in runs["twelve"][0].stderr.splitlines(), runs["twelve"][0].stderr
    assert line in json.loads((tmp_path / "otwelve" / "run.json").read_text())["warnings"]
    assert "16-bit" not in runs["eight"][0].stderr
    np.testing.assert_allclose(runs["twelve"][1], runs["eight"][1], atol=0.02)


def test_a_prophoto_export_scores_as_its_srgb_export(tmp_path):
    """QA 53: frames exported in ProPhoto RGB (their profile embedded) were read as sRGB, and the shipped model scored
    a bleeding frame 0.15-0.21 instead of 0.999. Now converted: the same scores and events as the sRGB export; run.json
    names the profile converted from."""
    import io

    import av
    from PIL import Image, ImageCms

    from icc import matrix_profile

    with av.open(str(DEMO_CLIP)) as container:
        views = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)][36:60]  # the second event and around it
    prophoto = matrix_profile()
    to_prophoto = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.ImageCmsProfile(io.BytesIO(prophoto)),
                                          "RGB", "RGB", renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
                                          flags=ImageCms.Flags.BLACKPOINTCOMPENSATION)
    srgb, wide = write_frame_folder(views, tmp_path / "srgb"), tmp_path / "wide"
    wide.mkdir()
    for i, rgb in enumerate(views):
        Image.fromarray(np.asarray(ImageCms.applyTransform(Image.fromarray(rgb), to_prophoto))).save(
            wide / f"frame{i}.png", icc_profile=prophoto)
    out = {}
    for name, folder in (("srgb", srgb), ("wide", wide)):
        done = triage("run", folder, "--fps", "4", "--out", tmp_path / f"o{name}", "--quiet", "--no-report")
        assert done.returncode == 0 and "Warning" not in done.stderr, done.stderr
        out[name] = (pq.read_table(tmp_path / f"o{name}" / "frames.parquet").column("score").to_numpy(),
                     pq.read_table(tmp_path / f"o{name}" / "events.parquet").select(["start_frame", "end_frame"]).to_pylist(),
                     json.loads((tmp_path / f"o{name}" / "run.json").read_text()))
    assert out["srgb"][0].max() > 0.9 and out["srgb"][1]  # the event is there to be lost
    np.testing.assert_allclose(out["wide"][0], out["srgb"][0], atol=0.05)
    assert out["wide"][1] == out["srgb"][1]
    assert out["wide"][2]["colour_profiles_converted"] == ["ProPhoto RGB (test) (from frame0.png)"]
    assert out["srgb"][2]["colour_profiles_converted"] == []


def test_an_hdr_recording_scores_as_its_sdr_recording(tmp_path):
    """QA 54: a PQ (HDR) recording was read as SDR: the shipped model scored its bleeding frames 0.13-0.32 instead of
    0.99, no word said. Now converted: the same scores and events as the SDR recording within 0.05, and a Warning:
    line says what was converted and how."""
    import av

    from hdr_clips import PQ, write_clip

    with av.open(str(DEMO_CLIP)) as container:
        views = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)][8:32]  # the first event and around it
    out = {}
    for name, path in (("sdr", encode_clip(views, tmp_path / "sdr.mp4", options={"qp": "0"})),
                       ("pq", write_clip(views, tmp_path / "pq.mp4", PQ))):
        done = triage("run", path, "--out", tmp_path / f"o{name}", "--quiet", "--no-report")
        assert done.returncode == 0, done.stderr
        out[name] = (done.stderr, pq.read_table(tmp_path / f"o{name}" / "frames.parquet").column("score").to_numpy(),
                     pq.read_table(tmp_path / f"o{name}" / "events.parquet").select(["start_frame", "end_frame"]).to_pylist())
    assert out["sdr"][1].max() > 0.9 and out["sdr"][2]  # the event is there to be lost
    np.testing.assert_allclose(out["pq"][1], out["sdr"][1], atol=0.05)
    assert out["pq"][2] == out["sdr"][2]
    assert (f"Warning: {tmp_path / 'pq.mp4'}: HDR video (PQ (SMPTE ST 2084), BT.2020 primaries): converted to SDR sRGB "
            "with BT.709 primaries") in out["pq"][0] and "Warning" not in out["sdr"][0]


def test_the_console_gives_event_times_on_the_page_s_clock(tmp_path, capsys):
    """QA 64 #5: the console said "#2: 19949.50 to 19999.50 s, peak >0.999 at 19983.00 s" where the review page said
    5:32:29.5-5:33:19.5: the reviewer could not match the two. Now the page's clock, with the seconds of events.parquet."""
    import pyarrow as pa

    from capsule_triage.cli import _print_top_events

    for pts, expected in (([0.0, 20000.0], "  #1: 5:32:29.5 to 5:33:19.5 (19949.50 to 19999.50 s), peak >0.999 at 5:33:03.0, 101 frames, bleeding"),
                          ([0.0, 120.0], "  #1: 0:10.0 to 0:20.5 (10.00 to 20.50 s), peak >0.999 at 0:13.0, 101 frames, bleeding"),
                          # review rev58 #6: ends at 3599.5 s at 2 frames/s, its timeline (and page) at 1:00:00.0: hours here too
                          (np.arange(7200) / 2, "  #1: 0:00:10.0 to 0:00:20.5 (10.00 to 20.50 s), peak >0.999 at 0:00:13.0, 101 frames, bleeding")):
        last = float(pts[-1])
        out = tmp_path / str(len(pts) + last)
        out.mkdir()
        start = 19949.5 if last > 3600 else 10.0
        (out / "run.json").write_text('{"model": {"config": {"abnormal_classes": ["bleeding", "ulcer"]}}}')  # a choice: named
        pq.write_table(pa.table({"pts_seconds": pts}), out / "frames.parquet")
        pq.write_table(pa.table({"rank": [0], "start_seconds": [start], "end_seconds": [start + (50.0 if last > 3600 else 10.5)],
                                 "peak_score": [0.9995], "peak_seconds": [start + (33.5 if last > 3600 else 3.0)],
                                 "frame_count": [101], "dominant_class": ["bleeding"]}), out / "events.parquet")
        _print_top_events(out)
        assert capsys.readouterr().out.splitlines() == [expected]
    # QA 92 #4: a transport stream timed across its clock's wrap starts before zero: "(-1.04-0.96 s)" read as a subtraction
    pq.write_table(pa.table({"pts_seconds": [-2.04, 1.92]}), out / "frames.parquet")
    pq.write_table(pa.table({"rank": [0], "start_seconds": [-1.04], "end_seconds": [0.96], "peak_score": [0.9], "peak_seconds": [-0.2],
                             "frame_count": [51], "dominant_class": ["bleeding"]}), out / "events.parquet")
    _print_top_events(out)
    assert capsys.readouterr().out == "  #1: -0:01.0 to 0:01.0 (-1.04 to 0.96 s), peak 0.900 at -0:00.2, 51 frames, bleeding\n"
    (out / "run.json").write_text('{"model": {"config": {"abnormal_classes": ["bleeding"]}}}')  # QA 96 #1: no choice, no class
    events = pq.read_table(out / "events.parquet").to_pylist()
    pq.write_table(pa.Table.from_pylist([{**events[0], "rank": r} for r in range(7)]), out / "events.parquet")
    _print_top_events(out)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "  #1: -0:01.0 to 0:01.0 (-1.04 to 0.96 s), peak 0.900 at -0:00.2, 51 frames" and len(lines) == 6
    assert lines[-1] == "  ... and 2 more events, ranked in the review page and events.parquet"  # QA 96 #8
    (out / "run.json").write_text('{"model": {"config": {"abnormal_classes": ["bleeding", "ulcer"]}}}')
    pq.write_table(pa.Table.from_pylist(events), out / "events.parquet")
    events = pq.read_table(out / "events.parquet")  # QA 66 #9: "1 frames"
    pq.write_table(events.set_column(events.schema.get_field_index("frame_count"), "frame_count", pa.array([1])), out / "events.parquet")
    _print_top_events(out)
    assert capsys.readouterr().out.endswith(" 1 frame, bleeding\n")


def test_a_complete_run_whose_reader_stopped_reading_exits_0(tmp_path, random_weights):
    """QA 66 #6: `triage run CLIP | head -1` exited 1 without a word, its output complete (`triage batch` exits 0)."""
    import os
    import subprocess
    import sys

    read, write = os.pipe()
    os.close(read)
    with os.fdopen(write, "w") as closed:
        done = subprocess.run([sys.executable, "-m", "capsule_triage.cli", "run", str(DEMO_CLIP), "--out", str(tmp_path / "o"),
                               "--weights", str(random_weights), "--quiet"], stdout=closed, stderr=subprocess.PIPE, text=True, timeout=300)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert (tmp_path / "o" / "run.json").is_file() and (tmp_path / "o" / "report.html").is_file()


def test_readme_lists_every_column(tmp_path, random_weights):
    """QA 80 #2: README named the columns of frames.parquet only, in prose, without types or when they are null; a reader
    of studies.parquet met `flagged_percent` (0-100) beside run.json's `flagged_fraction` (0-1) unexplained."""
    import re

    import pyarrow as pa

    from capsule_triage.batch.summary import SUMMARY_COLUMNS
    from capsule_triage.versions import version_line

    listed: dict[str, list[tuple[str, str]]] = {}
    for line in (REPO / "README.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 5 and re.fullmatch(r"`\w+\.parquet`", cells[0]):
            names, types = re.findall(r"`([^`]+)`", cells[1]), [t.strip() for t in cells[2].split(",")]
            assert len(types) in (1, len(names)), line
            listed.setdefault(cells[0].strip("`"), []).extend(zip(names, types * len(names) if len(types) == 1 else types))
    folder = write_frame_folder(mixed_clip_frames()[:12], tmp_path / "frames")  # a folder's tables have every column
    done = triage("run", folder, "--weights", random_weights, "--out", tmp_path / "out", "--quiet")
    assert done.returncode == 0, done.stderr
    for name in ("frames.parquet", "events.parquet", "top_frames.parquet"):
        written = [(re.sub(r"^prob_.+", "prob_<class>", field.name), str(field.type)) for field in pq.read_schema(tmp_path / "out" / name)]
        assert listed.pop(name) == list(dict.fromkeys(written)), name
        assert pq.read_schema(tmp_path / "out" / name).metadata[b"capsule_triage"] == version_line().encode()  # QA 80 #3
    assert listed.pop("studies.parquet") == [(column, str(getattr(pa, typ)())) for column, typ in SUMMARY_COLUMNS.items()]
    assert not listed


def test_a_video_whose_frames_repeat_one_time_is_said(tmp_path, random_weights):
    """QA 81 #3: a file whose muxer wrote every frame at 0 ran as 'Duration 0.0 s' at 599 frames/s, every frame smoothed
    with every other, with no word."""
    import av

    from capsule_triage.run_notes import frame_times_note

    with av.open(str(tmp_path / "one_time.mkv"), "w") as out:
        stream = out.add_stream("libx264", rate=30, options={"bf": "0"})
        stream.width, stream.height, stream.pix_fmt = 96, 96, "yuv420p"
        for i, rgb in enumerate(mixed_clip_frames()[:12]):
            frame = av.VideoFrame.from_ndarray(cv2.resize(rgb, (96, 96)), format="rgb24")
            frame.pts = i
            for packet in [*stream.encode(frame), *(stream.encode() if i == 11 else [])]:
                packet.pts = packet.dts = 0  # what the muxer was given
                out.mux(packet)
    done = triage("run", tmp_path / "one_time.mkv", "--weights", random_weights, "--out", tmp_path / "out", "--quiet")
    said = (f"Warning: {tmp_path / 'one_time.mkv'}: all 12 frames carry one time (0 s): the file stores no usable frame times, "
            "so its duration, events and smoothing (over seconds) are not the recording's; export it again, or triage its "
            "frames as a folder with --fps F")
    assert done.returncode == 0 and said in done.stderr.splitlines(), done.stderr
    assert said.removeprefix("Warning: ") in json.loads((tmp_path / "out" / "run.json").read_text())["warnings"]
    steps = np.arange(10) / 30
    assert frame_times_note("v.mp4", {}, np.repeat(steps, 3)).startswith("v.mp4: 20 of its 29 frame steps repeat a time: ")
    assert frame_times_note("v.mp4", {}, np.concatenate([steps, steps[:4]])) is None  # a few repeated: periods.py's business


def test_an_interlaced_video_is_said(tmp_path, random_weights):
    """QA 81 #4: a 1080i capture (interlaced_frame set on every frame) was read as progressive: its thumbnails combed
    wherever there was motion, and neither run.json nor a Warning: line said it."""
    frames = [cv2.resize(rgb, (96, 96)) for rgb in mixed_clip_frames()[:8]]
    encode_clip(frames, tmp_path / "interlaced.mp4", options={"flags": "+ildct+ilme"})
    encode_clip(frames, tmp_path / "progressive.mp4")
    said = (f"Warning: {tmp_path / 'interlaced.mp4'}: interlaced video (two fields in each frame): scored as stored, not "
            "deinterlaced; where there is motion its thumbnails show combing")
    for name, warned in (("interlaced.mp4", True), ("progressive.mp4", False)):
        done = triage("run", tmp_path / name, "--weights", random_weights, "--out", tmp_path / name.replace(".", "_"), "--quiet")
        assert done.returncode == 0 and (said in done.stderr.splitlines()) == warned, done.stderr
        run = json.loads((tmp_path / name.replace(".", "_") / "run.json").read_text())
        assert (said.removeprefix("Warning: ") in run["warnings"]) == warned
    # rev78 #5: an interlaced HDR frame (1080i HLG, broadcast's) said only its conversion
    import av

    from capsule_triage.video_colour import INTERLACED_NOTE, frame_notes

    with av.open(str(tmp_path / "hlg.mp4"), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"flags": "+ildct+ilme"})
        stream.width, stream.height, stream.pix_fmt = 96, 96, "yuv420p"
        context = stream.codec_context
        context.colorspace, context.color_range, context.color_primaries, context.color_trc = 9, 1, 9, 18  # BT.2020, HLG
        for i, rgb in enumerate(frames[:2]):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            frame.colorspace, frame.color_range, frame.color_primaries, frame.color_trc, frame.pts = 9, 1, 9, 18, i
            for packet in [*stream.encode(frame), *(stream.encode() if i == 1 else [])]:
                out.mux(packet)
    with av.open(str(tmp_path / "hlg.mp4")) as container:
        notes = frame_notes(next(container.decode(video=0)))
    assert len(notes) == 2 and notes[0].startswith("HDR video (HLG") and notes[1] == INTERLACED_NOTE
