"""Decoding in a child process: the same batches, stats and errors as in-process reading; a dead
decoder is an InputError; stopping early ends the child."""

from __future__ import annotations

import os
import pickle
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from capsule_triage.errors import InputError, WeightsError
from capsule_triage.frames import DecodeStats
from capsule_triage.reader import ReadOptions, read_frames
from capsule_triage.reader_process import read_frames_in_process
from conftest import DEMO_CLIP, encode_clip


def _decoder_children() -> list[int]:
    """Live children of this process running the decoder entry point."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid, state = int(stat.rsplit(")", 1)[1].split()[1]), stat.rsplit(")", 1)[1].split()[0]
        if ppid == os.getpid() and b"capsule_triage._decoder_child" in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def _both(path, options):
    in_process, child = DecodeStats(), DecodeStats()
    expected = list(read_frames(path, options, in_process))
    got = list(read_frames_in_process(path, options, child, depth=2))
    return expected, got, in_process, child


def _same_counts(child: DecodeStats, in_process: DecodeStats) -> bool:
    """The same counters and messages; the decoder process also reports its own peak memory."""
    assert child.decoder_peak_rss_mb > 0 and in_process.decoder_peak_rss_mb == 0
    return (child.frames_decoded, child.frames_skipped, child.errors) == (in_process.frames_decoded, in_process.frames_skipped, in_process.errors)


def _assert_same(expected, got):
    assert [len(b) for b in got] == [len(b) for b in expected]
    for a, b in zip(expected, got):
        np.testing.assert_array_equal(a.data, b.data)
        np.testing.assert_array_equal(a.frame_index, b.frame_index)
        np.testing.assert_array_equal(a.pts_seconds, b.pts_seconds)


@pytest.mark.parametrize("options", [ReadOptions(batch_size=5, short_side=96),  # more batches than slots: slots are reused
                                     ReadOptions(batch_size=64, short_side=112, square_crop=False)])
def test_same_batches_and_stats_as_reading_in_process(options):
    expected, got, in_process, child = _both(DEMO_CLIP, options)
    _assert_same(expected, got)
    assert _same_counts(child, in_process) and child.frames_decoded == 64


def test_frames_of_several_sizes_travel_outside_the_ring(tmp_path):
    import cv2

    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(60, 80), (60, 80), (90, 70), (90, 70), (60, 80)]):
        cv2.imwrite(str(folder / f"f{i}.png"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    expected, got, in_process, child = _both(folder, ReadOptions(batch_size=2, short_side=None, square_crop=False))
    assert {b.data.shape[1:3] for b in got} == {(60, 80), (90, 70)}  # the ring is sized for the first image only
    _assert_same(expected, got)
    assert _same_counts(child, in_process)


def test_errors_are_raised_in_the_consumer_with_the_same_message(tmp_path):
    data = DEMO_CLIP.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    messages = []
    for read in (read_frames, read_frames_in_process):
        with pytest.raises(InputError) as info:
            list(read(truncated, ReadOptions(batch_size=8, short_side=64)))
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    assert messages[1].startswith(str(truncated)) and ("truncated" in messages[1] or "not a readable video" in messages[1])


def test_decode_errors_inside_the_stream_are_counted_like_in_process(tmp_path):
    from malformed import frame_payloads

    rng = np.random.default_rng(0)
    clip = encode_clip([rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(12)], tmp_path / "a.avi", codec="mjpeg")
    data = bytearray(clip.read_bytes())
    for start, end in frame_payloads(clip)[5:7]:  # two frames' JPEG data replaced by garbage
        data[start:end] = b"\x00" * (end - start)
    damaged = tmp_path / "damaged.avi"
    damaged.write_bytes(bytes(data))
    expected, got, in_process, child = _both(damaged, ReadOptions(batch_size=4, short_side=32))
    _assert_same(expected, got)
    assert _same_counts(child, in_process) and child.frames_skipped == 2 and child.errors


@pytest.mark.parametrize("sig, fault", [(signal.SIGKILL, False), (signal.SIGSEGV, True)])
def test_a_killed_decoder_names_the_file_and_whether_the_input_did_it(sig, fault):
    """rev42: a decoder killed by the out-of-memory killer (SIGKILL) was an input error, so a batch recorded the input as bad
    and never retried it; a crash of the decoder itself (SIGSEGV, ...) is the input's doing."""
    from capsule_triage.errors import TriageError

    batches = read_frames_in_process(DEMO_CLIP, ReadOptions(batch_size=1, short_side=64), depth=1)
    next(batches)
    (pid,) = _decoder_children()
    os.kill(pid, sig)
    with pytest.raises(TriageError) as err:
        for _ in batches:
            pass
    assert isinstance(err.value, InputError) is fault
    assert str(err.value).startswith(f"{DEMO_CLIP}: decoder process " + (f"died (killed by signal {int(sig)})" if fault else
                                                                          "killed by signal 9 from outside before the end of the stream"))


def test_stopping_early_ends_the_decoder():
    batches = read_frames_in_process(DEMO_CLIP, ReadOptions(batch_size=1, short_side=64), depth=1)
    next(batches)
    assert len(_decoder_children()) == 1
    batches.close()
    deadline = time.monotonic() + 5
    while _decoder_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _decoder_children() == []


def test_errors_survive_pickling_with_path_and_message():
    for error in (InputError("/x/a.mp4", "truncated video"), WeightsError("w.safetensors", "bad")):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and (copy.path, copy.message, str(copy)) == (error.path, error.message, str(error))


def test_a_run_whose_decoder_dies_fails_with_one_error_and_leaves_no_output(random_weights, tmp_path, monkeypatch):
    from capsule_triage import Classifier, RunOptions, TriageError, load_classifier, load_pipeline, triage_study

    pipeline = load_pipeline("capsule-bleeding")
    classifier = load_classifier(pipeline, weights=str(random_weights))
    score = Classifier.submit

    def kill_the_decoder_then_score(self, batch):  # on the model's first call the decoder is mid-stream
        for pid in _decoder_children():
            os.kill(pid, signal.SIGKILL)
        return score(self, batch)

    monkeypatch.setattr(Classifier, "submit", kill_the_decoder_then_score)
    out = tmp_path / "out"
    with pytest.raises(TriageError, match=r"demo_capsule_4fps\.mp4: decoder process killed by signal 9 from outside"):
        triage_study(DEMO_CLIP, pipeline, classifier, RunOptions(out=out, batch_size=1, queue_depth=1, decode_in="process"))
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == []


def test_without_room_for_the_ring_batches_travel_through_the_socket(monkeypatch):
    import errno

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)  # e.g. Docker's 64 MB /dev/shm, and a full temp folder
    expected, got, in_process, child = _both(DEMO_CLIP, ReadOptions(batch_size=16, short_side=96))
    _assert_same(expected, got)
    assert _same_counts(child, in_process)


def _no_room(place_errno):
    import errno
    import tempfile

    made = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir == "/dev/shm" or place_errno.get("temp"):
            raise OSError(errno.ENOSPC, "No space left on device", f"{dir}/capsule-triage-ring-x")
        return made(*args, dir=dir, **kwargs)
    return mkstemp


def test_a_full_dev_shm_is_not_needed_for_the_ring(monkeypatch):
    """QA 49: a full (or read-only) /dev/shm made `triage run` of any video of 1,000 frames or more a traceback
    (mkstemp failed before the fallback was tried); the ring is anonymous memory where the system has it, else
    /dev/shm, else the temp folder."""
    import tempfile

    monkeypatch.setattr(tempfile, "mkstemp", _no_room({}))
    expected, got, in_process, child = _both(DEMO_CLIP, ReadOptions(batch_size=16, short_side=96))
    _assert_same(expected, got)
    if hasattr(os, "memfd_create"):  # and without anonymous memory: the temp folder
        monkeypatch.delattr(os, "memfd_create")
        expected, got, in_process, child = _both(DEMO_CLIP, ReadOptions(batch_size=16, short_side=96))
        _assert_same(expected, got)


def test_a_ring_over_64_mb_keeps_out_of_anonymous_memory(monkeypatch):
    """rev43: anonymous memory is pinned and charged to a container's limit: a ring bigger than Docker's default
    /dev/shm (64 MB; a 1080p field-of-view read takes 68-101 MB) goes to /dev/shm or the temp folder, as before."""
    from capsule_triage import reader_process

    made = []
    if hasattr(os, "memfd_create"):
        real = os.memfd_create
        monkeypatch.setattr(os, "memfd_create", lambda *a, **k: made.append(a) or real(*a, **k))
    options = ReadOptions(batch_size=16, short_side=96)
    list(read_frames_in_process(DEMO_CLIP, options, DecodeStats(), depth=2))
    assert len(made) == (1 if hasattr(os, "memfd_create") else 0)  # 2 x 16 frames of 96 x 96: 0.9 MB
    monkeypatch.setattr(reader_process, "MEMFD_MAX_BYTES", 96 * 96 * 3 * 16 * 2 - 1)
    expected, got, in_process, child = _both(DEMO_CLIP, options)
    _assert_same(expected, got)
    assert len(made) == (1 if hasattr(os, "memfd_create") else 0)


def test_nowhere_for_the_ring_is_one_line_that_blames_no_input(monkeypatch):
    import errno
    import tempfile

    from capsule_triage.errors import TriageError

    def no_memory(*args, **kwargs):
        raise OSError(errno.ENOMEM, "Cannot allocate memory")

    monkeypatch.setattr(os, "memfd_create", no_memory, raising=False)
    monkeypatch.setattr(tempfile, "mkstemp", _no_room({"temp": True}))
    with pytest.raises(TriageError) as caught:
        list(read_frames_in_process(DEMO_CLIP, ReadOptions(batch_size=16, short_side=96), DecodeStats(), depth=2))
    assert type(caught.value) is TriageError  # not an InputError: a batch retries the study
    assert str(caught.value) == (f"{DEMO_CLIP}: cannot make the decoder process's frame buffer anywhere (memory: Cannot allocate "
                                 f"memory; /dev/shm: No space left on device; {tempfile.gettempdir()}: No space left on device); "
                                 "not a fault of the input")


def test_the_decoder_process_loads_only_the_reader():
    import subprocess
    import sys

    code = ("import sys, capsule_triage._decoder_child, capsule_triage as c\n"
            "heavy = sorted(m for m in ('pyarrow', 'onnxruntime', 'openvino', 'torch', 'timm', 'capsule_triage.pipeline') if m in sys.modules)\n"
            "names = [n for n in c.__all__ if n not in dir(c)]\n"
            "print(heavy, names, c.RunOptions.__module__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[] [] capsule_triage.run_options"  # and a public name still imports on first use
