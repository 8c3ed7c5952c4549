"""Bad input: one line `Error: <path>: <problem>`, exit code 2, no output folder left behind."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
import shutil
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import DEMO_CLIP, REPO, demo_clip_frames, encode_clip, triage, write_frame_folder


def _expect_error(tmp_path, source, weights, message, *extra, prefix=()):
    out = tmp_path / "out"
    result = triage("run", source, "--weights", weights, "--out", out, *extra, prefix=prefix)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert message in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    assert not out.exists() and not list(tmp_path.glob(".out*"))
    return lines[0]


def test_missing_path(tmp_path, random_weights):
    line = _expect_error(tmp_path, tmp_path / "nope.mp4", random_weights, "no such file or directory")
    assert line == f"Error: {tmp_path / 'nope.mp4'}: no such file or directory"


def test_empty_file(tmp_path, random_weights):
    (tmp_path / "empty.mp4").write_bytes(b"")
    _expect_error(tmp_path, tmp_path / "empty.mp4", random_weights, "empty.mp4: file is empty (0 bytes)")


def test_not_a_video(tmp_path, random_weights):
    (tmp_path / "notes.mp4").write_bytes(b"this is a text file, not a video\n" * 100)
    _expect_error(tmp_path, tmp_path / "notes.mp4", random_weights, "notes.mp4: not a readable video (a text file, beginning "
                                                                    "'this is a text file, not a video\\nthis is')")


def test_a_still_image_named_as_a_video_is_refused(tmp_path, random_weights):
    """QA 72 #6: a PNG saved as image.mp4 was triaged as a one-frame video (FFmpeg reads it with its png_pipe)."""
    import cv2

    frame = demo_clip_frames()[0]
    for name, ext, codec in (("image.mp4", ".png", "png"), ("photo.avi", ".jpg", "mjpeg"),
                             ("frame_0001.jpg", ".jpg", "mjpeg"), ("frame.JPEG", ".jpg", "mjpeg")):  # QA 77 #3: image2 read a .jpg
        (tmp_path / name).write_bytes(cv2.imencode(ext, frame)[1].tobytes())
        _expect_error(tmp_path, tmp_path / name, random_weights,
                      f"{name}: a still image ({codec}), not a video: put it in a folder of frames to triage it")


def test_an_unreadable_file_says_what_it_is_where_its_bytes_tell(tmp_path, random_weights):
    """QA 47: a text file, a truncated export and one still being copied in all read "not a readable video (Invalid data
    found when processing input)": the morning reader took a copy cut short for a corrupt recording."""
    import struct

    from capsule_triage.completeness import unreadable_why

    data = DEMO_CLIP.read_bytes()  # ftyp, free, mdat, then moov: its index is written last
    (tmp_path / "cut.mp4").write_bytes(data[:140_000])
    _expect_error(tmp_path, tmp_path / "cut.mp4", random_weights, "cut.mp4: not a readable video (an MP4/MOV cut short: the file ends "
                  "inside its 'mdat' box (139,960 of its 281,407 bytes), before its index (the 'moov' box): still being copied, or damaged)")
    moov = data.index(b"moov") - 4
    mdat = data.index(b"mdat") - 4
    (tmp_path / "unfinished.mp4").write_bytes(data[:moov])  # every box whole, no index
    assert unreadable_why(tmp_path / "unfinished.mp4") == "an MP4/MOV without its index (the 'moov' box): a recording never finished?"
    (tmp_path / "open.mp4").write_bytes(data[:mdat] + struct.pack(">I", 0) + data[mdat + 4: moov])  # rev41: what FFmpeg's muxer leaves when killed
    assert unreadable_why(tmp_path / "open.mp4").startswith("an MP4/MOV never finished: its 'mdat' box runs to the end of the file")
    damaged = bytearray(data[:moov])
    damaged[mdat + 4: mdat + 8] = b"\x00\x01\x02\x03"  # rev41: garbage where a box type should be is not named as one
    (tmp_path / "damaged.mp4").write_bytes(bytes(damaged))
    assert unreadable_why(tmp_path / "damaged.mp4") is None
    (tmp_path / "page.mp4").write_text("<!DOCTYPE html><html><body>Sign in</body></html>")  # a download that saved a login page
    assert unreadable_why(tmp_path / "page.mp4") == "a text file, beginning '<!DOCTYPE html><html><body>Sign in</body'"
    (tmp_path / "bom.mp4").write_bytes(b"\xef\xbb\xbf" + b" " * 100 + "x".ljust(254, "\u00e9").encode())  # BOM, spaces, a cut character
    assert unreadable_why(tmp_path / "bom.mp4") == "a text file, beginning 'x" + "\u00e9" * 39 + "'"
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    assert unreadable_why(tmp_path / "noise.mp4") is None and unreadable_why(DEMO_CLIP) is None  # FFmpeg's words stand


def test_truncated_video(tmp_path, random_weights):
    data = DEMO_CLIP.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    _expect_error(tmp_path, tmp_path / "cut.mp4", random_weights, "cut.mp4: ")


def test_truncated_faststart_video_reports_missing_frames(tmp_path, random_weights):
    clip = encode_clip(demo_clip_frames()[:40], tmp_path / "fast.mp4", container_options={"movflags": "faststart"})
    data = clip.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: int(len(data) * 0.6)])
    _expect_error(tmp_path, tmp_path / "cut.mp4", random_weights, "truncated video: stream ended after")


def test_folder_without_images(tmp_path, random_weights):
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "readme.txt").write_text("no images here")
    _expect_error(tmp_path, tmp_path / "frames", random_weights, "frames: folder contains no frame images")


def test_folder_of_undecodable_images_has_zero_decodable_frames(tmp_path, random_weights):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        (folder / f"f{i}.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    _expect_error(tmp_path, folder, random_weights, "frames: no decodable frames")


def test_one_undecodable_image_is_skipped_and_counted(tmp_path, random_weights):
    """Documented graceful result: a bad image among good ones is skipped, counted in run.json."""
    folder = write_frame_folder(demo_clip_frames()[:6], tmp_path / "frames")
    (folder / "frame3.png").write_bytes(b"\x89PNG broken")
    import cv2

    small = cv2.imencode(".png", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))[1].tobytes()
    (folder / "frame4.png").write_bytes(small[: len(small) // 2])  # cut short: OpenCV's log printed a warning for it
    out = tmp_path / "out"
    result = triage("run", folder, "--weights", random_weights, "--out", out, "--quiet", "--fps", "2")
    assert result.returncode == 0, result.stderr
    # The skipped frames are reported in run.json and one Warning line (QA 72 #3: a batch said them nowhere), not by
    # OpenCV's log or libpng on stderr (libpng printed "libpng error: ..." for a PNG cut short until the reader refused
    # PNGs without their end itself).
    run = json.loads((out / "run.json").read_text())
    assert run["frames_decoded"] == 4 and run["frames_skipped"] == 2
    assert "frame3.png" in run["decode_errors"][0] and "frame4.png" in run["decode_errors"][1]
    assert result.stderr == (f"Warning: {folder}: 2 frames could not be decoded and were not scored (first: {run['decode_errors'][0]}); "
                             "see decode_errors in run.json\n"), result.stderr


def test_images_a_frame_folder_does_not_read_are_named(tmp_path, random_weights):
    """Found by QA: the bleeding half of a study in a subfolder was never scored, exit 0, no word; QA 61: nor a
    recording beside the frames."""
    folder = write_frame_folder(demo_clip_frames()[:4], tmp_path / "study")
    write_frame_folder(demo_clip_frames()[4:10], folder / "part2")
    shutil.copy(DEMO_CLIP, folder / "patient7.MP4")
    out = tmp_path / "out"
    result = triage("run", folder, "--weights", random_weights, "--out", out, "--quiet", "--fps", "2")
    assert result.returncode == 0, result.stderr
    unread = ["images in 1 subfolder: part2/ (6)", "1 video file: patient7.MP4 (a video is a study of its own, not frames of this one)"]
    assert result.stderr.strip() == f"Warning: {folder}: not read: {'; '.join(unread)}; see source.unread in run.json"
    run = json.loads((out / "run.json").read_text())
    assert run["frames_decoded"] == 4 and run["source"]["unread"] == unread


def test_frame_names_whose_decimals_natural_order_misreads_are_said(tmp_path, random_weights):
    """QA 77 #4: frames named by decimal seconds ("frame_0.25s") were scored as 0.5, 0.25, 0.75, 0 ... (natural order
    reads 0.25 as 25) without a word: the order stays (a name such as "study_1.10" may number), and the run says it."""
    folder = tmp_path / "study"
    times = ["0", "0.25", "0.5", "0.75", "1", "1.25"]
    for name, frame in zip(times, demo_clip_frames()):
        write_frame_folder([frame], folder, pattern=f"frame_{name}s")
    out = tmp_path / "out"
    result = triage("run", folder, "--weights", random_weights, "--out", out, "--quiet", "--fps", "4")
    said = (f"Warning: {folder}: names with decimal numbers put in natural order, which reads 0.25 as 25 (frame_0.5s.png "
            "before frame_0.25s.png): if the numbers are times, a timestamps.csv (filename,pts_seconds) in the folder puts "
            "the frames in time order")
    assert result.returncode == 0 and result.stderr.strip() == said, result.stderr
    assert json.loads((out / "run.json").read_text())["source"]["name_decimals"] == ["frame_0.5s.png before frame_0.25s.png"]
    (folder / "timestamps.csv").write_text("filename,pts_seconds\n" + "".join(f"frame_{t}s.png,{t}\n" for t in times))
    result = triage("run", folder, "--weights", random_weights, "--out", out, "--quiet", "--force")
    assert result.returncode == 0 and result.stderr == "", result.stderr  # timed by its CSV: nothing to say


def test_frame_names_that_number_alike_are_named(tmp_path, random_weights):
    """QA 61: a folder holding both Image_01.jpg and Image_1.jpg put them in name order (their order in time a guess
    at --fps) without a word; a timestamps.csv in the folder times them, and then nothing is said."""
    folder = write_frame_folder(demo_clip_frames()[:4], tmp_path / "study", pattern="Image_{}")
    shutil.copy(folder / "Image_1.png", folder / "Image_01.png")
    out = tmp_path / "out"
    result = triage("run", folder, "--weights", random_weights, "--out", out, "--quiet", "--fps", "2")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == (f"Warning: {folder}: 1 group of frame names alike but for leading zeros, case, type or Unicode form "
                                     "(Image_01.png and Image_1.png): put in name order, so their order in time is a guess; a "
                                     "timestamps.csv (filename,pts_seconds) in the folder times them")
    run = json.loads((out / "run.json").read_text())
    assert run["frames_decoded"] == 5 and run["source"]["name_twins"] == ["Image_01.png and Image_1.png"]
    from capsule_triage.frame_folder import scan_frame_folder

    for name in ("image_2.jpg", "Image_003.png"):  # rev64: case and type too; a FIFO (not read) is not named
        shutil.copy(folder / "Image_0.png", folder / name)
    os.mkfifo(folder / "Image_001.jpg")
    assert scan_frame_folder(folder).twins == ["Image_01.png and Image_1.png", "image_2.jpg and Image_2.png",
                                               "Image_003.png and Image_3.png"]
    for name in ("image_2.jpg", "Image_003.png", "Image_001.jpg"):
        (folder / name).unlink()
    copies = ("Image_2 - Copy.png", "Image_3 (1).png", "Image_0 copy 2.png", "Image_1 - Copy - Copy.png", "Image_2 (another copy).png",
              "image_3 (3rd copy).PNG", "Image_0 - Kopie.png", "Other (1).png")  # QA 77 #5 (rev77: copies of copies, GNOME's, German)
    for name in copies:
        shutil.copy(folder / "Image_0.png", folder / name)
    listing = scan_frame_folder(folder)
    assert listing.twins == ["Image_01.png and Image_1.png"] and listing.copies == [  # ("Other (1)" alone: a name)
        "Image_0 - Kopie.png (of Image_0.png)", "Image_0 copy 2.png (of Image_0.png)", "Image_1 - Copy - Copy.png (of Image_01.png)",
        "Image_2 (another copy).png (of Image_2.png)", "Image_2 - Copy.png (of Image_2.png)", "Image_3 (1).png (of Image_3.png)",
        "image_3 (3rd copy).PNG (of Image_3.png)"]
    result = triage("run", folder, "--weights", random_weights, "--out", tmp_path / "copies", "--quiet", "--fps", "2")
    assert result.returncode == 0 and result.stderr.strip().endswith(
        "7 images named as a file manager's copy of another (Image_0 - Kopie.png (of Image_0.png), Image_0 copy 2.png (of "
        "Image_0.png), Image_1 - Copy - Copy.png (of Image_01.png) and 4 more): each scored as a frame of its own, every later "
        "frame a period later; delete them if a copy"), result.stderr
    assert json.loads((tmp_path / "copies" / "run.json").read_text())["source"]["name_copies"] == listing.copies
    for name in copies:
        (folder / name).unlink()
    (folder / "timestamps.csv").write_text("filename,pts_seconds\n" + "".join(
        f"{name},{t}\n" for t, name in enumerate(["Image_0.png", "Image_1.png", "Image_01.png", "Image_2.png", "Image_3.png"])))
    result = triage("run", folder, "--weights", random_weights, "--out", out, "--quiet", "--force")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert json.loads((out / "run.json").read_text())["source"]["name_twins"] == []


def test_unreadable_image_in_folder(tmp_path, random_weights):
    from malformed import drop_dac_override_prefix

    prefix = drop_dac_override_prefix()  # as root: the child without root's permission bypass (it skipped as root before)
    if prefix is None:
        pytest.skip("running as root without setpriv: permissions do not stop root's reads")
    folder = write_frame_folder(demo_clip_frames()[:3], tmp_path / "frames")
    (folder / "frame1.png").chmod(0)
    _expect_error(tmp_path, folder, random_weights, "frame1.png: permission denied", prefix=prefix)


def test_a_path_through_a_folder_this_user_cannot_search_is_one_line(tmp_path, random_weights):
    """rev71 #1, rev72 #2: Python 3.11's Path.exists() raises EACCES for a path inside a folder without search
    permission (a service user reading another user's export), and so does opening a file there: `triage run` of a
    file there, `triage batch` of such an input or into such an OUT_DIR, and a weights folder, preset, timestamps CSV,
    batch folder to report or data to evaluate there were tracebacks. As root, the child runs without root's
    permission bypass (setpriv)."""
    from malformed import drop_dac_override_prefix

    prefix = drop_dac_override_prefix()
    if prefix is None:
        pytest.skip("running as root without setpriv: a folder's mode does not stop root")
    write_frame_folder(demo_clip_frames()[:3], tmp_path / "frames")
    (tmp_path / "in").mkdir()
    shutil.copy(DEMO_CLIP, tmp_path / "in" / "a.mp4")
    closed = tmp_path / "closed"
    (closed / "in").mkdir(parents=True)
    shutil.copy(DEMO_CLIP, closed / "a.mp4")
    shutil.copytree(random_weights, closed / "weights") if random_weights.is_dir() else shutil.copy(random_weights, closed / "weights")
    (closed / "preset.toml").write_text((REPO / "pipelines" / "capsule-bleeding.toml").read_text())
    (closed / "times.csv").write_text("frame,seconds\n0,0\n1,1\n2,2\n")
    out = tmp_path / "out"
    searched = "permission denied (a folder on its path cannot be searched by this user)"
    read = "permission denied (this user cannot read it, or cannot search a folder on its path)"
    w = ["--weights", random_weights]
    cases = [(["run", closed / "a.mp4", "--out", out, *w], closed / "a.mp4", searched),
             (["batch", closed / "in", "--out", out, *w], closed / "in", searched),
             (["batch", tmp_path / "in", "--out", closed / "out", *w], closed / "out", searched),
             (["run", tmp_path / "in" / "a.mp4", "--out", out, "--weights", closed / "weights"], closed / "weights", read),
             (["batch", tmp_path / "in", "--out", out, "--weights", closed / "weights"], closed / "weights", read),
             (["run", tmp_path / "in" / "a.mp4", "--out", out, *w, "-p", closed / "preset.toml"], closed / "preset.toml", read),
             (["run", tmp_path / "frames", "--out", out, *w, "--timestamps", closed / "times.csv"], closed / "times.csv", read),
             (["report", closed / "in"], closed / "in" / "studies.parquet", read),
             (["run", tmp_path / "in" / "a.mp4", "--out", closed / "o", *w], closed, "cannot write here (permission denied: this "
                                                                               "user cannot search it)"),
             (["batch", tmp_path / "in", "--out", tmp_path / "link", *w], tmp_path / "link",  # rev72 #6: the link's target's path
              f"permission denied (a link to {closed / 'out'}: a folder on its path cannot be searched by this user)"),
             (["batch", tmp_path / "in", "--out", tmp_path / "via" / "link", *w], tmp_path / "via" / "link",  # rev73 #1: relative,
              f"permission denied (a link to {closed / 'out'}: a folder on its path cannot be searched by this user)")]  # linked parent
    (tmp_path / "link").symlink_to(closed / "out")
    (tmp_path / "deep" / "er").mkdir(parents=True)
    (tmp_path / "via").symlink_to(tmp_path / "deep" / "er")
    (tmp_path / "deep" / "er" / "link").symlink_to(Path("..") / ".." / "closed" / "out")  # ../.. from deep/er, not from via
    closed.chmod(0o600)  # listed, not searched
    try:
        for args, path, why in cases:
            result = triage(*args, *(["--quiet"] if args[0] != "report" else []), prefix=prefix)
            assert (result.returncode, result.stdout, result.stderr) == (2, "", f"Error: {path}: {why}\n"), (args, result.stderr[-2000:])
            assert not out.exists()
    finally:
        closed.chmod(0o755)
    assert sorted(p.name for p in closed.iterdir()) == ["a.mp4", "in", "preset.toml", "times.csv", "weights"]  # no OUT_DIR made


def test_weights_missing(tmp_path):
    _expect_error(tmp_path, DEMO_CLIP, tmp_path / "no-weights", "no-weights: weights not found")


def test_weights_not_matching_the_preset_classes(tmp_path, random_weights):
    other = tmp_path / "three-class"
    shutil.copytree(random_weights, other)
    config = json.loads((other / "config.json").read_text())
    config.update(class_names=["GC", "GU", "CG"], abnormal_classes=["GC"])
    (other / "config.json").write_text(json.dumps(config))
    _expect_error(tmp_path, DEMO_CLIP, other, "do not match the preset's ['non-bleeding', 'bleeding']; preset gastric-3class-resnet50 "
                                              "has these classes: run with -p gastric-3class-resnet50")  # QA 44: named no preset
    config.update(class_names=["GU", "GC", "CG"], abnormal_classes=["GC"])  # review rev60 #4: in another order they ran as trained
    (other / "config.json").write_text(json.dumps(config))
    _expect_error(tmp_path, DEMO_CLIP, other, "preset gastric-3class-resnet50 has these classes in the order ['GC', 'GU', 'CG'], and the "
                                              "head's order must be the preset's (train with --classes GC,GU,CG, or give a preset file")
    config.update(class_names=["GC", "GU", "CG"])
    (other / "config.json").write_text(json.dumps(config))
    (tmp_path / "in").mkdir()  # QA 44: a batch refused them after it had made OUT_DIR and its batch.log
    shutil.copy(DEMO_CLIP, tmp_path / "in")
    result = triage("batch", tmp_path / "in", "--out", tmp_path / "bout", "--weights", other)
    assert result.returncode == 2 and "preset gastric-3class-resnet50 has these classes" in result.stderr and not (tmp_path / "bout").exists()
    # QA 65 #1: weights of a group's own labels, which no preset has (`triage train` wrote them), were refused until one
    # wrote a preset: they run as trained, their classes and abnormal ones, under the preset's reading and event settings
    config.update(class_names=["normal", "polyp"], abnormal_classes=["polyp"])
    (other / "config.json").write_text(json.dumps(config))
    said = ("Warning: the weights were trained with class_names ['normal', 'polyp'], abnormal_classes ['polyp']; the preset says "
            "class_names ['non-bleeding', 'bleeding'], abnormal_classes ['bleeding']: frames are read and scored as the weights were trained")
    for command in (("run", DEMO_CLIP, "--out", tmp_path / "own"), ("batch", tmp_path / "in", "--out", tmp_path / "bown", "--quiet")):
        result = triage(*command, "--weights", other)
        assert result.returncode == 0 and said in result.stderr.splitlines(), result.stderr
    events = pq.read_table(tmp_path / "own" / "events.parquet").to_pylist()
    frames = pq.read_table(tmp_path / "own" / "frames.parquet")
    assert {e["dominant_class"] for e in events} <= {"polyp"} and {"prob_normal", "prob_polyp"} <= set(frames.column_names)
    assert json.loads((tmp_path / "own" / "run.json").read_text())["model"]["config"]["class_names"] == ["normal", "polyp"]


def test_a_preset_s_model_settings_its_own_weights_folder_overrides_are_named(tmp_path, random_weights):
    """QA 93 #1: a hospital's preset set threshold = 0.3 beside its own weights folder, whose config.json says 0.5: the run
    ranked at 0.5 without a word. The folder's config still wins (it says how the weights were trained and chosen); the
    settings it overrides are named. Settings equal to the folder's, and a folder given with --weights, say nothing."""
    config = json.loads((random_weights / "config.json").read_text())
    preset = tmp_path / "hospital.toml"
    preset.write_text(f'name = "hospital"\n[model]\nweights = "{random_weights}"\narchitecture = "{config["architecture"]}"\n'
                      f'class_names = {json.dumps(config["class_names"])}\nabnormal_classes = ["bleeding"]\ninput_size = {config["input_size"]}\n'
                      'mean = [0.5, 0.5, 0.5]\nthreshold = 0.3\n')
    said = ("Warning: the preset's [model] mean [0.5, 0.5, 0.5], threshold 0.3 are not used: its weights folder's config.json says "
            "mean [0.485, 0.456, 0.406], threshold 0.5 (a weights folder is read and scored as its config.json says; [rank] "
            "enter_threshold or --threshold set the operating point)")
    result = triage("run", DEMO_CLIP, "-p", preset, "--out", tmp_path / "out", "--no-report")
    assert result.returncode == 0 and said in result.stderr.splitlines(), result.stderr
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert said.removeprefix("Warning: ") in run["warnings"] and run["parameters"]["rank"]["enter_threshold"] == 0.5
    given = triage("run", DEMO_CLIP, "-p", preset, "--weights", random_weights, "--out", tmp_path / "given", "--no-report")
    assert given.returncode == 0 and "not used" not in given.stderr, given.stderr
    preset.write_text(preset.read_text().replace("mean = [0.5, 0.5, 0.5]\nthreshold = 0.3\n", "threshold = 0.5000000001\n"))
    same = triage("run", DEMO_CLIP, "-p", preset, "--out", tmp_path / "same", "--no-report")
    assert same.returncode == 0 and "not used" not in same.stderr, same.stderr
    # rev91 #7: a config.json without the key was quoted as saying the default taken in its place
    from capsule_triage.model_config import ModelConfig, unused_preset_settings

    folder, preset_model = ModelConfig.from_dict(config), ModelConfig.from_dict({**config, "threshold": 0.3, "mean": [0.5, 0.5, 0.5]})
    written = set(config) - {"threshold"}
    assert unused_preset_settings(folder, preset_model, ["threshold", "mean"], written) == (
        "the preset's [model] mean [0.5, 0.5, 0.5], threshold 0.3 are not used: its weights folder's config.json says mean "
        "[0.485, 0.456, 0.406] and names no threshold (its default 0.5 is taken) (a weights folder is read and scored as its "
        "config.json says, and by its defaults where it is silent; [rank] enter_threshold or --threshold set the operating point)")
    assert unused_preset_settings(folder, preset_model, ["threshold"], written).startswith(
        "the preset's [model] threshold 0.3 is not used: its weights folder's config.json names no threshold (its default 0.5 is taken) (")
    assert unused_preset_settings(folder, preset_model, ["threshold", "mean"], written - {"mean"}).startswith(  # rev95 #4
        "the preset's [model] mean [0.5, 0.5, 0.5], threshold 0.3 are not used: its weights folder's config.json names no mean or "
        "threshold (its defaults [0.485, 0.456, 0.406] and 0.5 are taken) (")
    lacking = tmp_path / "lacking"
    shutil.copytree(random_weights, lacking)
    (lacking / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "threshold"}))
    preset.write_text(preset.read_text().replace(str(random_weights), str(lacking)).replace("threshold = 0.5000000001", "threshold = 0.3"))
    absent = triage("run", DEMO_CLIP, "-p", preset, "--out", tmp_path / "absent", "--no-report")
    assert absent.returncode == 0 and "config.json names no threshold (its default 0.5 is taken)" in absent.stderr, absent.stderr


def test_preset_whose_weights_are_not_installed_says_how_to_get_them(tmp_path):
    out = tmp_path / "out"
    result = triage("run", DEMO_CLIP, "--pipeline", "gastric-ebc-bit-r101x3", "--out", out)
    assert result.returncode == 2 and not out.exists()
    assert "weights for pipeline 'gastric-ebc-bit-r101x3' are not installed" in result.stderr
    assert "triage train" in result.stderr and "--weights" in result.stderr
    # QA 25: seed B's recipe (BiT-M, whole network, BiT-HyperRule), not the default two-stage cosine schedule on in1k weights
    assert "--strategy full --schedule bit --class-weighting none" in result.stderr  # QA 104 #2: seed B weighs classes alike
    assert "--init hub:resnetv2_101x3_bit.goog_in21k" in result.stderr and "--input-size 384" in result.stderr  # QA 104 #1
    # QA 113 #4: a copy of a shipped preset (its name kept) naming weights not there read as the shipped preset's
    mine = tmp_path / "mine.toml"
    mine.write_text((REPO / "pipelines" / "capsule-bleeding.toml").read_text().replace('weights = "capsule-bleeding-lite0"',
                                                                                      'weights = "my-weights"'))
    result = triage("run", DEMO_CLIP, "--pipeline", mine, "--out", out)
    assert result.returncode == 2 and not out.exists()
    assert f"Error: {REPO / 'weights' / 'my-weights'}: weights for pipeline 'capsule-bleeding' ({mine}) are not installed" in result.stderr


def test_unknown_preset(tmp_path):
    result = triage("run", DEMO_CLIP, "--pipeline", "no-such-preset", "--out", tmp_path / "o")
    assert result.returncode == 2 and "no such pipeline preset (known: capsule-bleeding, " in result.stderr
    from capsule_triage.errors import PresetError
    from capsule_triage.presets import load_pipeline

    with pytest.raises(PresetError, match="^p/h2: pipeline preset file not found$"):  # QA 93 #8: a path, as the README says
        load_pipeline("p/h2")


def test_a_source_that_cannot_be_triaged_is_refused_before_the_model_loads(tmp_path):
    """A mistyped path was said after the model had loaded (3.5 s with PyTorch weights; 0.4 s now): the weights
    named here do not exist, and the source's error comes first."""
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "notes.mp4").write_text("not a video")
    (tmp_path / "no-frames").mkdir()  # review rev32: a folder's listing and times were still read after the model loaded
    write_frame_folder([np.zeros((8, 8, 3), np.uint8)], tmp_path / "frames")
    for source, problem in (("missing.mp4", "no such file or directory"), ("empty.mp4", "file is empty (0 bytes)"),
                            ("notes.mp4", "not a readable video"),
                            ("no-frames", "folder contains no frame images"), ("frames", "timestamp CSV not found")):
        extra = ("--timestamps", tmp_path / "t.csv") if source == "frames" else ()
        result = triage("run", tmp_path / source, "--weights", tmp_path / "no-weights", "--out", tmp_path / "o", *extra)
        where = tmp_path / ("t.csv" if source == "frames" else source)
        assert result.returncode == 2 and result.stderr.strip().startswith(f"Error: {where}: {problem}"), result.stderr
    assert not (tmp_path / "o").exists()


def test_a_folder_named_like_a_preset_in_the_working_folder_does_not_hide_the_preset(tmp_path, monkeypatch):
    """QA: with a data folder called capsule-bleeding in the working folder, every run on the defaults
    failed 'pipeline preset file not found'. A bare name is a preset; a path with a folder part is a file."""
    from capsule_triage.errors import PresetError
    from capsule_triage.presets import find_preset, load_pipeline, project_home

    monkeypatch.chdir(tmp_path)
    (tmp_path / "capsule-bleeding").mkdir()
    (tmp_path / "gastric-3class-resnet50").write_text("not a preset")
    assert find_preset("capsule-bleeding") == project_home() / "pipelines" / "capsule-bleeding.toml"
    assert load_pipeline("gastric-3class-resnet50").name == "gastric-3class-resnet50"
    with pytest.raises(PresetError, match="is a folder, not a pipeline preset file"):
        find_preset("./capsule-bleeding")
    (tmp_path / "mine").write_text((project_home() / "pipelines" / "capsule-bleeding.toml").read_text())
    assert find_preset("mine") == Path("mine")  # a preset file of the user's own, without the suffix


# ----------------------------------------------------------------------------- where the output goes


def _refused(result, path, message):
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith(f"Error: {path}: ") and message in lines[0], result.stderr
    return lines[0]


def test_out_that_holds_the_input_is_refused_even_with_force(tmp_path, random_weights):
    """--force must never delete a study: --out naming the input's own folder (or a frame folder
    itself) is refused before any work, and every file in it survives."""
    study = tmp_path / "study1"
    study.mkdir()
    video = study / "capsule.mp4"
    shutil.copy(DEMO_CLIP, video)
    (study / "notes.txt").write_text("keep me")
    result = triage("run", video, "--weights", random_weights, "--out", study, "--force")
    _refused(result, study, "output folder would replace the input")
    assert sorted(p.name for p in study.iterdir()) == ["capsule.mp4", "notes.txt"]
    assert video.read_bytes() == DEMO_CLIP.read_bytes()

    frames = write_frame_folder(_demo_frames(3), tmp_path / "frames")
    before = sorted(p.name for p in frames.iterdir())
    result = triage("run", frames, "--weights", random_weights, "--out", frames, "--force")
    _refused(result, frames, "output folder would replace the input")
    assert sorted(p.name for p in frames.iterdir()) == before


def test_force_replaces_only_an_earlier_output(tmp_path, random_weights):
    """A folder that is not an earlier output (no run.json) is not replaced, with or without --force."""
    folder = tmp_path / "documents"
    folder.mkdir()
    (folder / "letter.txt").write_text("keep me")
    for force in ((), ("--force",)):  # review rev29: without --force it was told to use --force, which would not help
        result = triage("run", DEMO_CLIP, "--weights", random_weights, "--out", folder, *force)
        _refused(result, folder, "folder is not an earlier triage output (no run.json)")
    assert [p.name for p in folder.iterdir()] == ["letter.txt"]
    made = tmp_path / "made_for_it"  # an empty folder made for the output (a file browser's .DS_Store in it) is filled
    made.mkdir()
    (made / ".DS_Store").write_text("finder")
    result = triage("run", DEMO_CLIP, "--weights", random_weights, "--out", made, "-q")
    assert result.returncode == 0 and (made / "run.json").is_file(), result.stderr
    repository = tmp_path / "repo"  # only a hidden folder: someone's (empty) repository, not an empty folder
    (repository / ".git").mkdir(parents=True)
    (repository / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    for force in ((), ("--force",)):
        _refused(triage("run", DEMO_CLIP, "--weights", random_weights, "--out", repository, *force), repository,
                 "folder is not an earlier triage output (no run.json)")
    assert (repository / ".git" / "HEAD").is_file()
    # QA 55: an earlier output that someone added a file to was replaced whole, their file with it
    (made / "notes.txt").write_text("event 2 is a polyp, not blood")
    _refused(triage("run", DEMO_CLIP, "--weights", random_weights, "--out", made, "--force"), made,
             "folder holds files this command does not write (notes.txt); --force replaces only an earlier output, "
             "choose another --out")
    assert (made / "notes.txt").read_text() == "event 2 is a polyp, not blood" and (made / "run.json").is_file()
    (made / "notes.txt").unlink()
    for mine in ("thumbnails/marked_by_dr_x.jpg", "report/notes.html"):  # QA 66 #2: deleted, only the top level was looked at
        (made / mine).write_text("a reviewer's")
        _refused(triage("run", DEMO_CLIP, "--weights", random_weights, "--out", made, "--force"), made,
                 f"folder holds files this command does not write ({mine}); --force replaces only an earlier output, "
                 "choose another --out")
        assert (made / mine).read_text() == "a reviewer's"
        (made / mine).unlink()
    (made / "report" / ".event-0001.html.1a2b3c4d.tmp").write_text("<html")  # a killed `triage report`'s, as below
    (made / ".report.html.1a2b3c4d.tmp").write_text("<html")  # what a killed `triage report` leaves is its own (rev50)
    result = triage("run", DEMO_CLIP, "--weights", random_weights, "--out", made, "--force", "-q")  # its own files only
    assert result.returncode == 0 and sorted(p.name for p in made.iterdir()) == [
        "events.parquet", "frames.parquet", "report", "report.html", "run.json", "thumbnails", "top_frames.parquet"], result.stderr


def test_out_under_a_file_is_refused_before_decoding(tmp_path, random_weights):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = triage("run", DEMO_CLIP, "--weights", random_weights, "--out", blocker / "sub" / "out")
    _refused(result, blocker, "is not a folder, so the output cannot be created under it")
    assert "Traceback" not in result.stderr and blocker.read_text() == "not a folder"


def test_out_in_a_read_only_folder_is_refused_before_decoding(tmp_path, random_weights):
    from malformed import drop_dac_override_prefix

    prefix = drop_dac_override_prefix()
    if prefix is None:
        pytest.skip("running as root without setpriv: mode 555 does not stop root's writes")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        result = subprocess.run([*prefix, sys.executable, "-m", "capsule_triage.cli", "run", str(DEMO_CLIP), "--weights",
                                 str(random_weights), "--out", str(locked / "new" / "out")], capture_output=True, text=True, timeout=300)
    finally:
        locked.chmod(0o755)
    _refused(result, locked, "cannot write here (permission denied)")
    assert list(locked.iterdir()) == []


def _demo_frames(count):
    import av

    with av.open(str(DEMO_CLIP)) as container:
        return [frame.to_ndarray(format="rgb24") for _, frame in zip(range(count), container.decode(video=0))]


def test_the_lost_frames_line_names_its_first_entry_only_among_several():
    """rev70 #8: '(first: ...)' of the only entry read circularly ('3 frames ... (first: 3 frame(s) at the start ...)');
    rev74 #6: with no entry it said '(?)'."""
    from capsule_triage.run_notes import warning_lines

    run = {"time_gaps": {"count": 0}, "frames_skipped": 3, "decode_errors": [], "source": {}}
    said = lambda *errors: warning_lines({**run, "decode_errors": list(errors)}, "x.mp4")  # noqa: E731
    assert said() == ["x.mp4: 3 frames could not be decoded and were not scored"]  # rev75 #6: nothing to see there
    assert said("3 frame(s) at the start") == ["x.mp4: 3 frames could not be decoded and were not scored (3 frame(s) at the "
                                               "start); see decode_errors in run.json"]
    assert said("a", "b") == ["x.mp4: 3 frames could not be decoded and were not scored (first: a); see decode_errors in run.json"]


def test_raw_h264_stream_is_refused_with_how_to_wrap_it(tmp_path, random_weights):
    """A raw elementary stream stores no rate: FFmpeg would time it at 25 frames/s (a 4 fps capsule
    clip would last 6x too short) and it cannot be seeked for thumbnails."""
    import av

    raw = tmp_path / "capsule.h264"
    with av.open(str(raw), "w", format="h264") as out:
        stream = out.add_stream("libx264", rate=4)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for frame in _demo_frames(8):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[:64, :64]), format="rgb24")))
        out.mux(stream.encode())
    _expect_error(tmp_path, raw, random_weights, "capsule.h264: raw h264 stream: it stores no frame rate or timestamps "
                  "(25 frames/s would be assumed)")
    assert " -i capsule.h264 -c copy capsule.mp4, and move capsule.h264 out of a batch's input folder" in _expect_error(
        tmp_path, raw, random_weights, "")
    # named as the file the advice would write: not the same name (ffmpeg would read and overwrite it)
    assert _expect_error(tmp_path, raw.rename(tmp_path / "capsule.MP4"), random_weights, "raw h264 stream").endswith(
        " -i capsule.MP4 -c copy capsule.mkv, and move capsule.MP4 out of a batch's input folder")


def test_truncated_mkv_is_refused_against_the_duration_its_muxer_wrote(tmp_path, random_weights):
    """Matroska counts no frames, but FFmpeg's and mkvmerge's muxers write each track's DURATION tag."""
    clip = encode_clip(_demo_frames(40), tmp_path / "full.mkv")
    data = clip.read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) // 2])
    line = _expect_error(tmp_path, tmp_path / "cut.mkv", random_weights, "cut.mkv: truncated video: stream ended at ")
    assert line.endswith("of the 10.0 s its header announces"), line
    whole = triage("run", clip, "--weights", random_weights, "--out", tmp_path / "whole", "--quiet")
    assert whole.returncode == 0, whole.stderr


def test_a_matroska_recording_never_finished_is_triaged_with_a_warning(tmp_path, random_weights):
    """QA 92 #2: a recorder that crashed mid-recording leaves a Matroska file of unknown size without a duration: read
    whole, it was triaged as a complete study without a word (a cut MP4 is refused, a cut finished MKV too)."""
    clip = tmp_path / "crashed.mkv"
    script = ("import os, sys, av, numpy as np\n"
              "c = av.open(sys.argv[1], 'w', options={'flush_packets': '1'})  # on disk as muxed, as a recorder writes\n"
              "s = c.add_stream('libx264', rate=4)\n"
              "s.width = s.height = 64\n"
              "s.pix_fmt = 'yuv420p'\n"
              "s.options = {'tune': 'zerolatency'}  # each frame's packet muxed as it is encoded\n"
              "for i in range(48):\n"
              "    f = av.VideoFrame.from_ndarray(np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8), format='rgb24')\n"
              "    f.pts = i\n"
              "    [c.mux(p) for p in s.encode(f)]\n"
              "os._exit(0)  # the muxer never closed: no duration, no index\n")
    subprocess.run([sys.executable, "-c", script, str(clip)], check=True, timeout=60)
    result = triage("run", clip, "--weights", random_weights, "--out", tmp_path / "out", "--quiet", "--no-report")
    assert result.returncode == 0, result.stderr
    assert (f"Warning: {clip}: a Matroska file with no duration recorded, as a recording never finished leaves it (a recorder "
            "stopped or crashed, a live capture; a browser's WebM recording writes none either): its frames are scored, but "
            "whether the recording went on beyond them cannot be told") in result.stderr.splitlines(), result.stderr
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["frames_decoded"] > 0 and any("no duration recorded" in w for w in run["warnings"])
    finished = encode_clip(_demo_frames(8), tmp_path / "finished.mkv")
    whole = triage("run", finished, "--weights", random_weights, "--out", tmp_path / "whole", "--quiet", "--no-report")
    assert whole.returncode == 0 and "no duration recorded" not in whole.stderr, whole.stderr


def _preset(tmp_path, model_extra: str = "", reader: str = "") -> str:
    path = tmp_path / "p.toml"
    path.write_text('name = "p"\n[model]\nweights = "capsule-bleeding-lite0"\narchitecture = "tf_efficientnet_lite0"\n'
                    f'class_names = ["non-bleeding", "bleeding"]\nabnormal_classes = ["bleeding"]\n{model_extra}\n[reader]\n{reader}\n')
    return str(path)


@pytest.mark.parametrize("model_extra,reader,message", [
    ('input_size = "224"', "", "[model] input_size must be an integer, got '224'"),
    ("input_size = 224.7", "", "[model] input_size must be an integer, got 224.7"),
    ('threshold = "0.3"', "", "[model] threshold must be a number, got '0.3'"),
    ('border_radius = "0.89"', "", "[model] border_radius must be a number, got '0.89'"),
    ("", 'batch_size = "32"', "[reader] batch_size must be a whole number from 1 to 1024, got '32'"),  # QA 94 #6: one rule, one
    ("", "batch_size = 0", "[reader] batch_size must be a whole number from 1 to 1024, got 0"),  # message (was ">= 1" here)
    ("", "batch_size = 100000", "[reader] batch_size must be a whole number from 1 to 1024, got 100000"),  # rev87 #4
    ("", 'decoder_threads = "two"', "[reader] decoder_threads must be a whole number >= 1, got 'two'"),
    ("", "folder_fps = 0", "[reader] folder_fps must be a finite number >= 0.001, got 0"),
    ("", "short_side = 100", "[reader] unknown key(s) ['short_side']; known: ['batch_size', 'decoder_threads', 'folder_fps']"),
])
def test_preset_values_of_the_wrong_type_or_range_give_one_line(tmp_path, model_extra, reader, message):
    preset = _preset(tmp_path, model_extra, reader)
    result = triage("run", DEMO_CLIP, "--pipeline", preset, "--out", tmp_path / "out")
    assert result.returncode == 2 and result.stderr.strip() == f"Error: {preset}: {message}", result.stderr
    assert not (tmp_path / "out").exists()


def test_a_preset_may_set_one_rank_threshold_and_a_contradiction_is_named(tmp_path):
    """QA 68 #2: enter_threshold = 0.3 alone was refused against RankParams' default leave_threshold (0.35), though the
    preset says leave defaults to 0.75 x enter; leave_threshold = 0.3 alone, above the model's threshold, was lowered to
    it without a word."""
    from dataclasses import replace

    from capsule_triage import load_pipeline
    from capsule_triage.errors import PresetError

    path = Path(_preset(tmp_path))
    base = path.read_text()
    path.write_text(base + "[rank]\nenter_threshold = 0.3\n")
    pipeline = load_pipeline(path)
    params = pipeline.rank_params(replace(pipeline.model, threshold=0.1883))
    assert (params.enter_threshold, params.leave_threshold) == (0.3, pytest.approx(0.225))
    path.write_text(base + "[rank]\nleave_threshold = 0.3\n")
    pipeline = load_pipeline(path)
    assert pipeline.rank_params(replace(pipeline.model, threshold=0.5)).leave_threshold == 0.3
    assert pipeline.rank_params(replace(pipeline.model, threshold=0.1883), threshold=0.6).leave_threshold == pytest.approx(0.45)
    with pytest.raises(PresetError, match=rf"^{re.escape(str(path))}: \[rank\] leave_threshold 0.3 is above the enter threshold "
                                          r"0.1883, the operating threshold of the model's config.json: set enter_threshold too, "
                                          r"or a lower leave_threshold$"):
        pipeline.rank_params(replace(pipeline.model, threshold=0.1883))
    with pytest.raises(ValueError, match=r"^RankParams.enter_threshold must be in \[0, 1\], got -0.5$"):
        pipeline.rank_params(pipeline.model, threshold=-0.5)  # rev64: was blamed on the preset
    # rev64: leave_threshold alone was checked against RankParams' default enter (0.5), not the preset's model threshold
    path.write_text(base.replace("[reader]", "threshold = 0.8\n[reader]") + "[rank]\nleave_threshold = 0.6\n")
    pipeline = load_pipeline(path)
    assert (pipeline.rank_params(pipeline.model).enter_threshold, pipeline.rank_params(pipeline.model).leave_threshold) == (0.8, 0.6)
    path.write_text(base.replace("[reader]", "threshold = 0.4\n[reader]") + "[rank]\nleave_threshold = 0.45\n")
    with pytest.raises(PresetError, match=r"\[rank\] RankParams.leave_threshold \(0.45\) must be <= enter_threshold \(0.4\)$"):
        load_pipeline(path)  # at load, not after the model (a batch of a loose file: every study failed alone)


def test_a_presets_weights_beside_it_are_found_and_none_named_is_said(tmp_path, random_weights):
    """QA 68 #3: weights = "./mine" (or "mine", a folder beside the preset) was read as weights/mine of the checkout and
    the error told the user to train into it; #6: weights = "" gave a training hint ending in "-o "."""
    from capsule_triage import load_classifier, load_pipeline
    from capsule_triage.errors import WeightsError

    shutil.copytree(random_weights, tmp_path / "mine")
    path = tmp_path / "p.toml"
    body = Path(_preset(tmp_path)).read_text().replace("capsule-bleeding-lite0", "{}").replace('"tf_efficientnet_lite0"', '"test_efficientnet"')
    for weights in ("./mine", "mine", "../" + tmp_path.name + "/mine"):
        path.write_text(body.format(weights))
        pipeline = load_pipeline(path)
        assert pipeline.weights == str(tmp_path / "mine"), weights
        assert load_classifier(pipeline, device="cpu").weights_path == str(tmp_path / "mine")
    loose = shutil.copy(tmp_path / "mine" / "model.safetensors", tmp_path / "loose.safetensors")
    path.write_text(body.format("./mine").replace("[reader]", "threshold = 0.4\n[reader]"))  # QA 68 #8: a loose file runs at it
    assert load_classifier(load_pipeline(path), weights=loose, device="cpu").config.threshold == 0.4
    assert load_classifier(load_pipeline(path), device="cpu").config.threshold == 0.5  # a folder: its own config.json's
    path.write_text(body.format("./gone"))
    assert load_pipeline(path).weights == str(tmp_path / "gone")  # a path stays where it points (then "not installed")
    path.write_text(body.format(""))
    with pytest.raises(WeightsError, match=rf"^{re.escape(str(path))}: pipeline 'p' names no weights \(\[model\] weights\); "
                                           r"train them with `triage train DATA .* -o FOLDER .*, or pass --weights PATH"):
        load_classifier(load_pipeline(path), device="cpu")


@pytest.mark.parametrize("head, message", [
    ("name = 5", "name must be a string, got 5"),  # was "[model] name must be a string"
    ('description = ["x", 1]', "description must be a string, got ['x', 1]"),  # was stored as "['x', 1]"
    ('weights_dir = "y"', "unknown key(s) ['weights_dir'] before [model]; known there: name, description (did a key miss "
                          "its section?)"),  # was "unknown section(s) ['weights_dir']"
    ("[extra]\nx = 1", "unknown section(s) ['extra']; known: [model], [reader], [rank]"),
])
def test_preset_top_level_mistakes_are_named_as_they_are(tmp_path, head, message):
    """QA 68 #10."""
    from capsule_triage import load_pipeline
    from capsule_triage.errors import PresetError

    path = tmp_path / "p.toml"
    body = Path(_preset(tmp_path)).read_text().replace('name = "p"\n', "")
    path.write_text(f"{head}\n{body}" if head.startswith(("name", "desc", "weights_dir")) else f"{body}{head}\n")
    with pytest.raises(PresetError) as error:
        load_pipeline(path)
    assert str(error.value) == f"{path}: {message}"
    with pytest.raises(PresetError, match=r"^'': no preset named: give a preset name or a .toml file$"):
        load_pipeline("")  # was ".: is a folder"


def test_config_json_values_of_the_wrong_type_are_named(tmp_path, random_weights):
    from capsule_triage.errors import WeightsError
    from capsule_triage.model_config import ModelConfig

    for field, value, kind in (("threshold", None, "a number"), ("input_size", "224", "an integer"), ("class_names", "ab", "a list of strings"),
                               ("architecture", 7, "a string"), ("mean", [0.5, 0.5], "a list of 3 numbers")):
        data = {**json.loads((random_weights / "config.json").read_text()), field: value}
        with pytest.raises(WeightsError, match=rf"^config.json: {field} must be {kind}, got {value!r}".replace("[", r"\[").replace("]", r"\]")):
            ModelConfig.from_dict(data)


def test_the_hint_for_preset_weights_not_installed_is_a_command_that_runs(tmp_path):
    result = triage("run", DEMO_CLIP, "--pipeline", "gastric-3class-resnet50", "--out", tmp_path / "o")
    assert result.returncode == 2
    assert ("`triage train DATA --arch resnet50 --classes GC,GU,CG --abnormal GC,GU --input-size 224 --border fov --border-radius 1 "
            "--augment rotate-zoom --class-weighting none --head-epochs 100 --epochs 100 -o " in result.stderr
            and "--init hub:resnet50.tv_in1k`" in result.stderr)  # QA 104 #6: seed A's 100 + 100 epochs, torchvision's weights
    # QA 16: the preset's classes in order, its border; QA 81 #6: seed A's augmentation and unweighted classes
    assert "--out" not in result.stderr


def test_frame_folder_options_on_a_video_and_skip_duplicates_out_of_range_are_refused(tmp_path):
    for option, value in (("--fps", "4"), ("--timestamps", str(tmp_path / "t.csv"))):
        result = triage("run", DEMO_CLIP, option, value, "--out", tmp_path / "o")
        assert result.returncode == 2 and not (tmp_path / "o").exists()
        assert result.stderr.strip() == f"Error: {option}: applies to a frame folder; {DEMO_CLIP} is a file (a video's frame times come from its stream)"
    folder = write_frame_folder(demo_clip_frames()[:2], tmp_path / "f")
    result = triage("run", folder, "--fps", "4", "--timestamps", str(tmp_path / "t.csv"), "--out", tmp_path / "o")
    assert result.returncode == 2 and not (tmp_path / "o").exists()
    assert result.stderr.strip() == "Error: --fps: give --fps or --timestamps, not both (the CSV's times are the frames' times)"
    for value in ("nan", "300", "inf"):  # 300 reused one score for every frame of the demo clip: 0 events instead of 2
        result = triage("run", DEMO_CLIP, "--skip-duplicates", value, "--out", tmp_path / "o")
        assert result.returncode == 2 and not (tmp_path / "o").exists() and "Traceback" not in result.stderr
    from capsule_triage import RunOptions, load_classifier, load_pipeline, triage_study

    pipeline = load_pipeline()
    with pytest.raises(ValueError, match=r"^skip_duplicates \(--skip-duplicates\) must be a mean grey-level difference in \[0, 255\], got nan"):
        triage_study(DEMO_CLIP, pipeline, load_classifier(pipeline), RunOptions(out=tmp_path / "o", skip_duplicates=float("nan")))
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, message", [
    (("run", DEMO_CLIP, "--threshold", "nan"), "Error: Invalid value for '--threshold': "),
    (("run", DEMO_CLIP, "--batch-size", "abc"), "Error: Invalid value for '--batch-size': "),
    (("run", DEMO_CLIP, "--no-such-option"), "Error: No such option: --no-such-option"),
    (("run",), "Error: Missing argument 'SOURCE'."),
    (("batch",), "Error: Missing argument 'INPUT_DIR'."),
    (("no-such-command",), "Error: No such command 'no-such-command'."),
])
def test_usage_errors_are_one_line_like_every_other_bad_input(tmp_path, args, message):
    """typer's framed usage panel was five lines of box drawing in a nightly log."""
    result = triage(*args, "--out", tmp_path / "o") if args[0] == "run" and len(args) > 1 else triage(*args)
    assert result.returncode == 2 and not (tmp_path / "o").exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert lines[0].endswith(f"(see 'triage {args[0]} --help')" if args[0] != "no-such-command" else "(see 'triage --help')")


def test_no_arguments_prints_the_help(tmp_path):
    result = triage()
    assert result.returncode == 2 and "Usage: triage [OPTIONS] COMMAND" in result.stdout + result.stderr
    assert "Error" not in result.stdout + result.stderr


def test_run_json_records_skip_duplicates_and_no_frame_folder_settings_for_a_video(tmp_path):
    result = triage("run", DEMO_CLIP, "--skip-duplicates", "8", "--out", tmp_path / "o", "--quiet")
    assert result.returncode == 0, result.stderr
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    parameters = run["parameters"]
    assert parameters["skip_duplicates"] == 8.0
    # QA 70 #3: which frames took a near-duplicate's score was said nowhere (run.json counted them)
    frames = pq.read_table(tmp_path / "o" / "frames.parquet").to_pydict()
    reused = np.array(frames["score_reused"])
    assert 0 < reused.sum() == run["frames_reused_as_duplicates"] < len(reused) and not reused[0]
    probs = np.array([frames["prob_non-bleeding"], frames["prob_bleeding"]]).T
    assert all((probs[i] == probs[i - 1]).all() for i in np.flatnonzero(reused))  # the frame before's (or its source's)
    assert "folder_fps" not in parameters["read"] and "timestamps_csv" not in parameters["read"]


def test_a_binary_preset_and_a_boolean_rank_value_are_named(tmp_path):
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    result = triage("run", DEMO_CLIP, "--pipeline", binary, "--out", tmp_path / "o")
    assert result.returncode == 2 and result.stderr.startswith(f"Error: {binary}: not valid TOML (")
    preset = _preset(tmp_path, "", "") + ""
    Path(preset).write_text(Path(preset).read_text() + "[rank]\nsmooth_seconds = true\n")
    result = triage("run", DEMO_CLIP, "--pipeline", preset, "--out", tmp_path / "o")
    assert result.returncode == 2 and "RankParams.smooth_seconds must be a finite number >= 0, got True" in result.stderr


def test_a_preset_with_a_bom_or_old_mac_line_ends_loads_and_is_hashed_as_read(tmp_path):
    """rev45: the preset is hashed from the bytes it is parsed from; a UTF-8 BOM (Notepad) read "Invalid statement (at
    line 1, column 1)", and classic Mac line ends (CR alone) must still load as read_text() read them."""
    import hashlib

    from capsule_triage.presets import load_pipeline

    shipped = (REPO / "pipelines" / "capsule-bleeding.toml").read_bytes()
    for name, data in (("bom.toml", b"\xef\xbb\xbf" + shipped), ("cr.toml", shipped.replace(b"\n", b"\r"))):
        path = tmp_path / name
        path.write_bytes(data)
        loaded = load_pipeline(str(path))
        assert loaded.rank == load_pipeline("capsule-bleeding").rank and loaded.sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("change", ["append", "replace", "delete", "folder"])
def test_an_input_changed_during_the_run_is_refused(tmp_path, random_weights, monkeypatch, change):
    """QA: a video replaced mid-run was recorded with the new file's SHA-256, the old one's size and
    scores and the new one's thumbnails (exit 0); one deleted mid-run ended in a FileNotFoundError traceback."""
    from capsule_triage import pipeline as pipeline_module
    from capsule_triage.errors import InputError
    from capsule_triage.pipeline import RunOptions, load_classifier, triage_study
    from capsule_triage.presets import load_pipeline

    if change == "folder":
        source = write_frame_folder(demo_clip_frames()[:4],
                                    tmp_path / "frames")
    else:
        source = tmp_path / "study.mp4"
        shutil.copy(DEMO_CLIP, source)
    score_stream = pipeline_module._score_stream

    def scored_then_changed(*args, **kwargs):
        result = score_stream(*args, **kwargs)
        if change == "append":
            with open(source, "ab") as fh:
                fh.write(b"\0" * 1000)
        elif change == "replace":
            other = tmp_path / "other.mp4"
            shutil.copy(DEMO_CLIP, other)
            os.replace(other, source)  # same bytes, another file: still not the one that was scored
        elif change == "delete":
            source.unlink()
        else:
            (source / "frame1.png").unlink()
        return result

    monkeypatch.setattr(pipeline_module, "_score_stream", scored_then_changed)
    preset = load_pipeline()
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"input changed while it was being triaged"):
        triage_study(source, preset, load_classifier(preset, weights=str(random_weights)), RunOptions(out=out))
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_closed_stdout_or_stderr_keep_the_exit_code(tmp_path, random_weights):
    """QA: started with stderr closed (`2>&-`), a good run exited 1 (AttributeError at exit) and a bad
    input 1 instead of 2; with stdout closed, a traceback."""
    import shlex

    cli = f"{shlex.quote(sys.executable)} -m capsule_triage.cli"
    run = f"{cli} run {shlex.quote(str(DEMO_CLIP))} --weights {shlex.quote(str(random_weights))} --quiet --out"
    cases = {f"{cli} run {shlex.quote(str(tmp_path / 'nope.mp4'))} 2>&-": 2,
             f"{run} {shlex.quote(str(tmp_path / 'a'))} 2>&-": 0,
             f"{run} {shlex.quote(str(tmp_path / 'b'))} >&-": 0}
    for command, expected in cases.items():
        done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=300)
        assert done.returncode == expected, (command, done.stderr)
    assert (tmp_path / "a" / "run.json").is_file() and (tmp_path / "b" / "run.json").is_file()


def test_output_names_too_long_and_symbolic_links_as_out(tmp_path, random_weights):
    """QA: a 240-byte --out name was refused only after scoring (the staging suffix pushed it past 255
    bytes), 256 bytes gave a traceback; --out a symlink with --force replaced the link by a folder and
    left the old output in the target plus a hidden '.replaced-' link for good."""
    for name in ("y" * 240, "x" * 256):
        result = triage("run", DEMO_CLIP, "--weights", random_weights, "--out", tmp_path / name, "--quiet")
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith(f"Error: {tmp_path / name}: name too long: at most 228 bytes"), result.stderr
    real = tmp_path / "real"
    assert triage("run", DEMO_CLIP, "--weights", random_weights, "--out", real, "--quiet").returncode == 0
    before = (real / "run.json").stat().st_mtime_ns
    (tmp_path / "link").symlink_to("real")
    result = triage("run", DEMO_CLIP, "--weights", random_weights, "--out", tmp_path / "link", "--force", "--quiet")
    assert result.returncode == 0 and f"Wrote {real}\n" in result.stdout, result.stdout + result.stderr
    assert (tmp_path / "link").is_symlink() and (real / "run.json").stat().st_mtime_ns != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]
    (tmp_path / "loop").symlink_to("loop")  # a symbolic link loop: Path.resolve raised RuntimeError, a traceback
    result = triage("run", DEMO_CLIP, "--weights", random_weights, "--out", tmp_path / "loop", "--quiet")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    (tmp_path / "loop").unlink()
    (tmp_path / "dangling").symlink_to("missing")
    result = triage("run", DEMO_CLIP, "--weights", random_weights, "--out", tmp_path / "dangling", "--quiet")
    assert result.returncode == 2 and result.stderr.strip() == f"Error: {tmp_path / 'dangling'}: is a symbolic link to missing, which is not a folder"


def test_control_characters_in_names_keep_errors_on_one_line(tmp_path):
    """QA: a newline in a file name split the one Error line in two (run), and eval/train/report/optimize
    printed names without the care run and batch take."""
    missing = tmp_path / "a\nb\x1b[31m.mp4"
    for args in (("run", missing), ("report", missing), ("eval", missing, missing)):
        result = triage(*args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and "a\\nb\\x1b[31m.mp4" in lines[0], (args, result.stderr)


def test_the_default_output_of_the_current_folder_is_beside_it(tmp_path, random_weights):
    """QA 66 #1: `triage run .` in a frame folder wrote `./_triage`, inside the input folder (README: `<input>_triage/`
    beside the input, never the input's own folder)."""
    from conftest import demo_clip_frames, write_frame_folder

    folder = write_frame_folder(demo_clip_frames()[:6], tmp_path / "study")
    result = triage("run", ".", "--fps", "2", "--weights", random_weights, "-q", cwd=folder)
    assert result.returncode == 0 and (tmp_path / "study_triage" / "run.json").is_file(), result.stderr
    assert sorted(p.name for p in folder.iterdir()) == [f"frame{i}.png" for i in range(6)]
    (folder / "inner").mkdir()
    result = triage("run", "..", "--fps", "2", "--weights", random_weights, "-q", "--force", cwd=folder / "inner")
    assert result.returncode == 0 and (tmp_path / "study_triage" / "run.json").is_file(), result.stderr


def test_a_locked_down_install_s_failures_are_one_line_each(tmp_path, random_weights):
    """QA 107 (a hospital's read-only install, run by a service user): #3 a library that cannot be imported (cv2's
    libGL.so.1) was a 60-line traceback; #5 `triage optimize` of a read-only weights folder said "backends.json:
    permission denied" after its checks; #6 an unreadable preset was "not valid TOML"; #8 the default output beside the
    input named a folder the user never typed, without saying why."""
    shadow = tmp_path / "shadow" / "cv2"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('libGL.so.1: cannot open shared object file: No such file or "
                                        "directory', name='cv2')\n")
    broken = triage("run", DEMO_CLIP, "--out", tmp_path / "o", env={"PYTHONPATH": str(shadow.parent)})
    assert broken.returncode == 2 and not (tmp_path / "o").exists()
    assert broken.stderr.strip() == ("Error: cannot import cv2 (libGL.so.1: cannot open shared object file: No such file or "
                                     "directory): this installation is incomplete or broken; a system library is missing: "
                                     "install it with the system's package manager (or opencv-python-headless in place of "
                                     "opencv-python)"), broken.stderr
    from malformed import drop_dac_override_prefix

    prefix = drop_dac_override_prefix()
    if prefix is None:
        pytest.skip("running as root without setpriv: permissions do not stop root")
    preset = tmp_path / "mine.toml"
    shutil.copy(REPO / "pipelines" / "capsule-bleeding.toml", preset)
    preset.chmod(0)
    done = triage("run", DEMO_CLIP, "-p", preset, "--weights", random_weights, "--out", tmp_path / "o", prefix=prefix)
    assert done.returncode == 2 and done.stderr.strip() == f"Error: {preset}: cannot read it (Permission denied)", done.stderr
    weights = shutil.copytree(random_weights, tmp_path / "weights")
    weights.chmod(0o555)
    done = triage("optimize", weights, "--check", DEMO_CLIP, prefix=prefix)
    assert done.returncode == 2 and done.stderr.strip() == (
        f"Error: {weights}: cannot write here (permission denied): triage optimize writes its ONNX files and backends.json "
        "beside the weights; copy the weights folder somewhere writable and optimize the copy"), done.stderr
    locked = tmp_path / "locked"
    locked.mkdir()
    shutil.copy(DEMO_CLIP, locked / "study.mp4")
    locked.chmod(0o555)
    done = triage("run", locked / "study.mp4", "--weights", random_weights, prefix=prefix)
    assert done.returncode == 2 and done.stderr.strip() == (
        f"Error: {locked}: cannot write here (permission denied) (the default output, beside the input: give --out DIR)"), done.stderr
    locked.chmod(0o755)
    weights.chmod(0o755)
    done = triage("run", locked / "study.mp4", "--weights", random_weights, "--quiet")
    again = triage("run", locked / "study.mp4", "--weights", random_weights)  # rev97 #6: not "--force" and "--out" at once
    assert done.returncode == 0 and again.returncode == 2 and "(the default output" not in again.stderr, again.stderr


def test_an_import_of_our_own_code_that_fails_keeps_its_traceback_and_the_module_runs_only_as_main(monkeypatch):
    """rev97 #1: the one-line ImportError of a broken library also flattened an import bug of capsule_triage itself into
    "reinstall the dependencies"; #3: `import capsule_triage.__main__` (pydoc, a tool listing modules) ran the command."""
    import subprocess
    import sys

    from capsule_triage import cli

    def broken(**kwargs):
        raise ImportError("cannot import name 'no_such_helper' from 'capsule_triage.outputs'", name="capsule_triage.outputs")

    monkeypatch.setattr(cli, "app", broken)
    with pytest.raises(ImportError, match="no_such_helper"):
        cli._run_app()
    imported = subprocess.run([sys.executable, "-c", "import capsule_triage.__main__; print('after import')"],
                              capture_output=True, text=True, timeout=120)
    assert imported.returncode == 0 and imported.stdout == "after import\n", imported.stdout + imported.stderr
