"""Malformed inputs derived from real clips, each with the outcome the tool promises for it.

Two uses:

* a library for ``tests/test_hardening.py``: :func:`make_cases` writes every case (videos and frame
  folders) into a folder and returns :class:`Case` s that declare the expected outcome: a one-line
  error containing a fragment, or a graceful result (frames decoded / skipped);
* a script, ``python tests/malformed.py make DIR`` (write the cases for a look by hand) and
  ``python tests/malformed.py serve`` (a warm interpreter that runs jobs in forked children; see
  :func:`serve`).

Every input is made from real capsule frames (the committed demo clip's, from ``../shared/data``) with PyAV, so the decoders see
real H.264 / MJPEG / PNG / JPEG data, broken in the specific ways capsule exports and half-copied
files break.
"""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import sys
import time
import traceback
import zlib
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import encode_clip, write_frame_folder  # noqa: E402

NON_UTF8_NAME = os.fsdecode(b"clip-\xff\xfe-latin1.mp4")  # a file name that is not valid UTF-8
SCRIPT_NAME = "<script>alert(1)<"  # '/' cannot be part of a file name

CASE_NAMES = (  # in the order make_cases writes them (tests are parametrised before any file exists)
    "zero_byte", "random_bytes", "cut_moov_at_end_header", "cut_moov_at_end_middle", "cut_moov_at_end_in_moov",
    "cut_faststart_in_moov", "cut_faststart_middle", "cut_faststart_last_packet", "flips_h264", "flips_mjpeg", "zeroed_h264",
    "audio_only", "one_frame", "huge_header_mp4", "huge_header_avi", "huge_frame_headers", "odd_size_h264",
    "odd_size_mjpeg", "size_change_h264", "size_change_mjpeg", "gray_png", "png16", "rgba_png", "one_bad_jpeg",
    "mixed_sizes", "huge_png_in_folder", "name_spaces", "name_non_utf8", "name_non_utf8_no_report",
    "name_non_utf8_image", "name_script",
    "symlink_loop", "dangling_symlink", "fifo", "folder_with_fifo", "unreadable_file", "unreadable_folder",
)
NON_UTF8_CASES = ("name_non_utf8", "name_non_utf8_no_report", "name_non_utf8_image")
KNOWN_BUGS: dict[str, str] = {}  # case -> why `triage run` does not keep its promise yet (none known)


@dataclass(frozen=True)
class Expect:
    """What ``triage run`` must do with an input.

    Attributes:
        error: fragment of the one-line ``Error: <path>: <problem>`` message (exit code 2, no output);
            None = a graceful result (exit code 0, complete output).
        frames: inclusive range of frames decoded (graceful results).
        skipped: inclusive range of frames skipped and counted in run.json (graceful results).
        total: frames decoded + skipped, when only the split depends on the decoder.
    """

    error: str | None = None
    frames: tuple[int, int] | None = None
    skipped: tuple[int, int] = (0, 0)
    total: int | None = None


@dataclass(frozen=True)
class Case:
    """One malformed input.

    Attributes:
        name: short identifier (test id).
        path: the file or folder to triage.
        expect: the promised outcome.
        what: how the input is broken, in words.
        needs: "no-dac-override": mode 000 must deny reads (see :func:`drop_dac_override_prefix`).
        xfail: reason the promised outcome is not met yet (a known bug outside the hardened modules).
        run_args: extra ``triage run`` arguments.
        default_out: run without ``--out`` (the output folder is named after the input, beside it).
    """

    name: str
    path: Path
    expect: Expect
    what: str
    needs: str | None = None
    xfail: str | None = None
    run_args: tuple[str, ...] = field(default_factory=tuple)
    default_out: bool = False


# ----------------------------------------------------------------------------- mp4 / avi surgery


def mp4_atoms(data: bytes, start: int = 0, end: int | None = None) -> dict[str, tuple[int, int]]:
    """Offset and size of the first atom of each type (top level and inside moov/trak/mdia/minf/stbl)."""
    end = len(data) if end is None else end
    found: dict[str, tuple[int, int]] = {}
    i = start
    while i + 8 <= end:
        size, kind = struct.unpack(">I4s", data[i : i + 8])
        if size < 8:
            break
        name = kind.decode("latin1")
        found.setdefault(name, (i, size))
        if name in ("moov", "trak", "mdia", "minf", "stbl"):
            for inner, where in mp4_atoms(data, i + 8, i + size).items():
                found.setdefault(inner, where)
        i += size
    return found


def media_range(path: Path) -> tuple[int, int]:
    """[start, end) of the compressed media: the mp4 ``mdat`` payload, or the avi ``movi`` list."""
    data = path.read_bytes()
    if path.suffix == ".mp4":
        offset, size = mp4_atoms(data)["mdat"]
        return offset + 8, offset + size
    start = data.find(b"movi") + 4
    idx = data.find(b"idx1", start)
    return start, idx if idx > 0 else len(data)


def frame_payloads(path: Path) -> list[tuple[int, int]]:
    """[start, end) of the coded frames themselves, without container structure: the mp4 ``mdat``
    payload (its sample tables live in ``moov``), or each ``##dc`` chunk's data inside an avi ``movi``
    list (whose chunk headers are container structure the demuxer walks)."""
    if path.suffix == ".mp4":
        return [media_range(path)]
    data = path.read_bytes()
    start, end = media_range(path)
    ranges, i = [], start
    while i + 8 <= end:
        kind, size = data[i : i + 4], struct.unpack("<I", data[i + 4 : i + 8])[0]
        if kind[2:] in (b"dc", b"db") and size:
            ranges.append((i + 8, min(i + 8 + size, end)))
        i += 8 + size + (size & 1)
    return ranges


def flip_bytes(data: bytes, *, start: int, end: int, count: int, seed: int) -> bytes:
    """``count`` single-bit flips at seeded positions in [start, end)."""
    rng = random.Random(seed)
    out = bytearray(data)
    for _ in range(count):
        i = rng.randrange(start, end)
        out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


def claim_huge_size_mp4(data: bytes, side: int = 60000) -> bytes:
    """The mp4 header (track header and the avc1 sample entry) claims side x side pixels."""
    out = bytearray(data)
    atoms = mp4_atoms(data)
    tkhd = atoms["tkhd"][0]
    out[tkhd + 84 : tkhd + 92] = struct.pack(">II", side << 16, side << 16)  # 16.16 fixed point
    avc1 = data.find(b"avc1", atoms["stsd"][0]) - 4
    out[avc1 + 32 : avc1 + 36] = struct.pack(">HH", side, side)
    return bytes(out)


def claim_huge_size_avi(data: bytes, side: int = 60000) -> bytes:
    """The avi header (avih and the stream's BITMAPINFOHEADER) claims side x side pixels."""
    out = bytearray(data)
    avih = data.find(b"avih")
    out[avih + 40 : avih + 48] = struct.pack("<II", side, side)
    strf = data.find(b"strf")
    out[strf + 12 : strf + 20] = struct.pack("<ii", side, side)
    return bytes(out)


def claim_huge_size_jpegs(data: bytes, side: int = 30000) -> bytes:
    """Every baseline JPEG frame header (SOF0) inside the file claims side x side pixels."""
    out = bytearray(data)
    i = 0
    while (i := out.find(b"\xff\xc0", i)) >= 0:
        out[i + 5 : i + 9] = struct.pack(">HH", side, side)
        i += 9
    return bytes(out)


def png_claiming(side: int) -> bytes:
    """A small PNG whose IHDR (with a valid CRC) claims side x side pixels."""
    ok, encoded = cv2.imencode(".png", np.zeros((16, 16, 3), np.uint8))
    data = bytearray(encoded.tobytes())
    ihdr = bytearray(data[12:29])  # b"IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", side, side)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


def encode_packets(frames: list[np.ndarray], codec: str, size: tuple[int, int], **options) -> list[av.Packet]:
    """Packets of one standalone encoder (H.264 carries its SPS/PPS in-band, so a second encoder's
    packets announce a new frame size mid-stream)."""
    cc = av.CodecContext.create(codec, "w")
    cc.width, cc.height = size
    cc.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
    cc.time_base, cc.framerate = Fraction(1, 4), Fraction(4)
    cc.options = {k: str(v) for k, v in options.items()}
    packets = []
    for i, rgb in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(cv2.resize(rgb, size)), format="rgb24").reformat(format=cc.pix_fmt)
        frame.pts = i
        packets += cc.encode(frame)
    return packets + cc.encode(None)


def mux_size_change(path: Path, frames: list[np.ndarray], codec: str, sizes: list[tuple[int, int]], **options) -> Path:
    """One video stream whose frame size changes: consecutive parts from encoders of different sizes."""
    part = len(frames) // len(sizes)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec if codec == "mjpeg" else "h264", rate=4)
        stream.width, stream.height = sizes[0]
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        stream.time_base = Fraction(1, 4)
        n = 0
        for k, size in enumerate(sizes):
            for packet in encode_packets(frames[k * part : (k + 1) * part], codec, size, **options):
                packet.stream = stream
                packet.pts = packet.dts = n
                packet.time_base = Fraction(1, 4)
                n += 1
                container.mux(packet)
    return path


def encode_h264_444(frames: list[np.ndarray], path: Path) -> Path:
    """H.264 4:4:4 (libx264 refuses odd sizes in 4:2:0)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=4)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv444p"
        for rgb in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")))
        container.mux(stream.encode())
    return path


def write_audio_only(path: Path, seconds: float = 1.0) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        t = np.arange(int(8000 * seconds), dtype=np.float32) / 8000
        tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        for start in range(0, tone.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, start : start + 1024]), format="fltp", layout="mono")
            frame.sample_rate = 8000
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


# ----------------------------------------------------------------------------- the cases


def make_cases(root: Path, frames: list[np.ndarray], *, non_utf8: bool = True) -> list[Case]:
    """Write every malformed input into ``root`` (one file or folder each) and describe it.

    Args:
        root: an empty folder; also usable as a ``triage batch`` tree (each case is one study).
        frames: at least 24 real RGB frames of one size (224 x 224: the demo clip's).
        non_utf8: include the cases whose file names are not valid UTF-8.
    """
    root.mkdir(parents=True, exist_ok=True)
    f = frames[:24]
    cases: list[Case] = []

    def add(name, path, expect, what, **kw):
        cases.append(Case(name, Path(path), expect, what, **kw))

    # -- not a video at all
    (root / "zero_byte.mp4").write_bytes(b"")
    add("zero_byte", root / "zero_byte.mp4", Expect("file is empty (0 bytes)"), "a zero-byte file")
    (root / "random_bytes.mp4").write_bytes(random.Random(7).randbytes(20_000))
    add("random_bytes", root / "random_bytes.mp4", Expect("not a readable video"), "20 kB of random bytes named .mp4")

    # -- truncation: moov at the end (the default of most recorders) and faststart (moov first)
    tail = encode_clip(f, root / ".source_moov_at_end.mp4")  # not a video suffix: only a source here
    data = tail.read_bytes()
    tail.unlink()
    atoms = mp4_atoms(data)
    moov, mdat = atoms["moov"], atoms["mdat"]
    assert moov[0] > mdat[0], "libx264 mp4 without faststart should put moov last"
    for label, cut, message in [
        ("header", 20, "not a readable video"),  # inside ftyp
        ("middle", mdat[0] + mdat[1] // 2, "not a readable video"),  # no moov: nothing to index the media
        ("in_moov", moov[0] + moov[1] // 2, "not a readable video"),  # the message depends on which box is cut
    ]:
        (root / f"cut_moov_at_end_{label}.mp4").write_bytes(data[:cut])
        add(f"cut_moov_at_end_{label}", root / f"cut_moov_at_end_{label}.mp4", Expect(message),
            f"moov-at-end mp4 cut at byte {cut} of {len(data)} ({label})")
    fast = encode_clip(f, root / ".source_faststart.mp4", container_options={"movflags": "faststart"}).read_bytes()
    (root / ".source_faststart.mp4").unlink()
    atoms = mp4_atoms(fast)
    moov, mdat = atoms["moov"], atoms["mdat"]
    assert moov[0] < mdat[0], "faststart mp4 should put moov first"
    for label, cut, expect in [
        ("in_moov", moov[0] + moov[1] // 5, Expect("not a readable video")),
        ("middle", mdat[0] + mdat[1] // 2, Expect("truncated video: stream ended after")),
        # the last packet loses its last bytes: that frame fails to decode and is counted
        ("last_packet", len(fast) - 10, Expect(frames=(22, 24), total=24, skipped=(0, 2))),
    ]:
        (root / f"cut_faststart_{label}.mp4").write_bytes(fast[:cut])
        add(f"cut_faststart_{label}", root / f"cut_faststart_{label}.mp4", expect,
            f"faststart mp4 cut at byte {cut} of {len(fast)} ({label})")

    # -- damaged media data: decoders conceal or skip; every frame is accounted for
    clip = encode_clip(f, root / "flips_h264.mp4")
    start, end = media_range(clip)
    clip.write_bytes(flip_bytes(clip.read_bytes(), start=start + 64, end=end, count=40, seed=1))
    add("flips_h264", clip, Expect(frames=(12, 24), total=24, skipped=(0, 12)), "40 bit flips inside the mdat of an H.264 mp4")
    clip = encode_clip(f, root / "flips_mjpeg.avi", codec="mjpeg")
    start, end = media_range(clip)
    clip.write_bytes(flip_bytes(clip.read_bytes(), start=start + 64, end=end, count=40, seed=2))
    add("flips_mjpeg", clip, Expect(frames=(12, 24), total=24, skipped=(0, 12)), "40 bit flips inside the movi list of an MJPEG avi")
    clip = encode_clip(f, root / "zeroed_h264.mp4")
    start, end = media_range(clip)
    data = bytearray(clip.read_bytes())
    middle = (start + end) // 2
    data[middle : middle + 15_000] = bytes(15_000)  # several whole packets: the decoder drops some without an error
    clip.write_bytes(bytes(data))
    add("zeroed_h264", clip, Expect(frames=(1, 23), total=24, skipped=(1, 23)),
        "15 kB of zeros in the middle of an H.264 mp4 (complete file: damaged, not truncated)")

    # -- streams
    write_audio_only(root / "audio_only.mp4")
    add("audio_only", root / "audio_only.mp4", Expect("no video stream (audio or data only)"), "an AAC-only mp4")
    encode_clip(f[:1], root / "one_frame.mp4")
    add("one_frame", root / "one_frame.mp4", Expect(frames=(1, 1)), "a one-frame H.264 mp4")

    # -- frame sizes
    huge = encode_clip(f[:12], root / "huge_header.mp4")
    huge.write_bytes(claim_huge_size_mp4(huge.read_bytes()))
    add("huge_header_mp4", huge, Expect(frames=(12, 12)), "tkhd and avc1 claim 60000x60000; the H.264 SPS says 224x224")
    huge = encode_clip(f[:12], root / "huge_header.avi", codec="mjpeg")
    huge.write_bytes(claim_huge_size_avi(huge.read_bytes()))
    add("huge_header_avi", huge, Expect(frames=(12, 12)), "avih and strf claim 60000x60000; the JPEGs are 224x224")
    huge = encode_clip(f[:12], root / "huge_frames.avi", codec="mjpeg")
    huge.write_bytes(claim_huge_size_jpegs(huge.read_bytes()))
    add("huge_frame_headers", huge, Expect("no decodable frames"), "every JPEG frame header claims 30000x30000 (data for 224x224)")
    odd = [cv2.resize(x, (225, 223), interpolation=cv2.INTER_AREA) for x in f[:8]]
    encode_h264_444(odd, root / "odd_225x223.mp4")
    add("odd_size_h264", root / "odd_225x223.mp4", Expect(frames=(8, 8)), "H.264 4:4:4 at 225x223")
    encode_clip(odd, root / "odd_225x223.avi", codec="mjpeg")
    add("odd_size_mjpeg", root / "odd_225x223.avi", Expect(frames=(8, 8)), "MJPEG at 225x223")
    mux_size_change(root / "size_change.mkv", f[:16], "libx264", [(224, 224), (320, 240)], crf=18, bf=0)
    add("size_change_h264", root / "size_change.mkv", Expect(frames=(16, 16)), "H.264 in mkv: 224x224 then 320x240 (new SPS mid-stream)")
    mux_size_change(root / "size_change_mjpeg.avi", f[:12], "mjpeg", [(224, 224), (160, 120), (225, 223)])
    add("size_change_mjpeg", root / "size_change_mjpeg.avi", Expect(frames=(12, 12)), "MJPEG avi whose JPEGs are 224x224, 160x120, 225x223")

    # -- frame folders
    for name, convert in [
        ("gray_png", lambda x: cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)),
        ("png16", lambda x: cv2.cvtColor(x, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257),
        ("rgba_png", lambda x: cv2.cvtColor(x, cv2.COLOR_RGB2BGRA)),
    ]:
        folder = root / name
        folder.mkdir()
        for i, rgb in enumerate(f[:6]):
            cv2.imwrite(str(folder / f"frame{i}.png"), convert(rgb))
        add(name, folder, Expect(frames=(6, 6)), f"a folder of 6 {name.replace('_', ' ')} images")
    folder = write_frame_folder(f[:8], root / "one_bad_jpeg", ext=".jpg")
    (folder / "frame3.jpg").write_bytes(b"\xff\xd8\xff\xe0" + random.Random(3).randbytes(3000))  # garbage after SOI
    whole = (folder / "frame5.jpg").read_bytes()
    (folder / "frame5.jpg").write_bytes(whole[: len(whole) // 2])  # truncated: libjpeg fills the rest grey
    add("one_bad_jpeg", folder, Expect(frames=(6, 7), skipped=(1, 2), total=8),
        "8 JPEGs: one garbage (skipped), one cut in half (skipped, or decoded grey below the cut, by OpenCV version)")
    folder = root / "mixed_sizes"
    folder.mkdir()
    for i, (rgb, size) in enumerate(zip(f[:6], [(224, 224), (320, 240), (225, 223), (100, 300), (64, 64), (640, 480)])):
        cv2.imwrite(str(folder / f"frame{i}.{'jpg' if i % 2 else 'png'}"), cv2.cvtColor(cv2.resize(rgb, size), cv2.COLOR_RGB2BGR))
    add("mixed_sizes", folder, Expect(frames=(6, 6)), "6 frames of 6 different sizes, png and jpg")
    folder = write_frame_folder(f[:5], root / "huge_png_in_folder")
    (folder / "frame2.png").write_bytes(png_claiming(30000))
    add("huge_png_in_folder", folder, Expect(frames=(4, 4), skipped=(1, 1)), "5 PNGs, one whose IHDR claims 30000x30000")

    # -- names
    encode_clip(f[:8], root / "clip with spaces.mp4")
    add("name_spaces", root / "clip with spaces.mp4", Expect(frames=(8, 8)), "a file name with spaces", default_out=True)
    if non_utf8:
        encode_clip(f[:8], root / NON_UTF8_NAME)
        add("name_non_utf8", root / NON_UTF8_NAME, Expect(frames=(8, 8)), "a file name with bytes that are not UTF-8 (b'\\xff\\xfe')",
            default_out=True)
        encode_clip(f[:8], root / ".non_utf8_no_report.mp4")
        os.rename(root / ".non_utf8_no_report.mp4", root / os.fsdecode(b"plain-\xff-no-report.mp4"))
        add("name_non_utf8_no_report", root / os.fsdecode(b"plain-\xff-no-report.mp4"), Expect(frames=(8, 8)),
            "a non-UTF-8 file name, --no-report and an ASCII --out", run_args=("--no-report",))
        folder = write_frame_folder(f[:6], root / "non_utf8_image")  # QA 80 #1: failed the study after scoring it
        os.rename(folder / "frame2.png", folder / os.fsdecode(b"frame2\xff.png"))
        add("name_non_utf8_image", folder, Expect(frames=(6, 6)), "a frame folder with one image named b'frame2\\xff.png'")
    write_frame_folder(f[:6], root / SCRIPT_NAME)
    add("name_script", root / SCRIPT_NAME, Expect(frames=(6, 6)), "a frame folder named <script>alert(1)<", default_out=True)

    # -- links and files that cannot be read
    os.symlink("self_loop.mp4", root / "self_loop.mp4")
    add("symlink_loop", root / "self_loop.mp4", Expect("broken symbolic link"),
        "a symlink to itself (ELOOP)")
    os.symlink("no-such-target.mp4", root / "dangling.mp4")
    add("dangling_symlink", root / "dangling.mp4", Expect("broken symbolic link"),
        "a symlink whose target is missing")
    os.mkfifo(root / "fifo.mp4")
    add("fifo", root / "fifo.mp4", Expect("not a regular file"), "a FIFO named .mp4 (reading it would block)")
    folder = write_frame_folder(f[:4], root / "folder_with_fifo_and_dangling")
    os.mkfifo(folder / "frame9.png")
    os.symlink("missing.png", folder / "frame10.png")
    add("folder_with_fifo", folder, Expect(frames=(4, 4), skipped=(2, 2)),
        "4 PNGs plus a FIFO and a dangling symlink named .png (skipped with why, in their places: QA 55)")
    encode_clip(f[:4], root / "unreadable.mp4").chmod(0)
    add("unreadable_file", root / "unreadable.mp4", Expect("permission denied"), "mode 000",
        needs="no-dac-override")
    folder = write_frame_folder(f[:4], root / "unreadable_folder")
    folder.chmod(0)
    add("unreadable_folder", folder, Expect("cannot list the folder (Permission denied)"), "a frame folder with mode 000",
        needs="no-dac-override")
    expected = [n for n in CASE_NAMES if non_utf8 or n not in NON_UTF8_CASES]
    assert [c.name for c in cases] == expected, "keep CASE_NAMES in step with make_cases"
    return [replace(c, xfail=KNOWN_BUGS.get(c.name)) for c in cases]


def restore_permissions(root: Path) -> None:
    """chmod back what :func:`make_cases` locked, so the tree can be deleted."""
    for path in (root / "unreadable.mp4", root / "unreadable_folder"):
        if path.exists() or path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)


# ----------------------------------------------------------------------------- a warm interpreter


def drop_dac_override_prefix() -> list[str] | None:
    """Command prefix that runs a child without root's permission bypass, or None if not needed /
    not possible. As root, mode 000 does not stop reads; ``setpriv`` can drop CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH from the bounding set, after which mode 000 denies root too."""
    if os.geteuid() != 0:
        return []
    import shutil
    import subprocess

    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    return prefix if probe.returncode == 0 else None


def fork_cli(args: list[str], *, stdout: Path, stderr: Path, cwd: Path | None = None) -> int:
    """Start ``triage ARGS`` in a forked child of this (warm) interpreter and return its pid.

    The child runs exactly what ``python -m capsule_triage.cli`` runs (``cli.main()``), with fresh
    standard streams on files, and exits with the CLI's exit code; an uncaught exception prints its
    traceback and exits 1, as the interpreter would. The parent must not have run torch operations
    (forked OpenMP pools can hang): only import here.
    """
    import capsule_triage.cli  # noqa: F401 - warm the imports before forking

    pid = os.fork()
    if pid:
        _own_group(pid)
        return pid
    code = 1
    try:
        os.setpgid(0, 0)
        if cwd is not None:
            os.chdir(cwd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(os.open(stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 1)
        os.dup2(os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 2)
        sys.stdin = open(0, encoding="utf-8", closefd=False)
        sys.stdout = open(1, "w", encoding="utf-8", errors="strict", closefd=False)
        sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
        sys.argv = ["triage", *args]
        from capsule_triage.cli import main

        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # noqa: BLE001 - exactly what the interpreter would print
            traceback.print_exc()
            code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _own_group(pid: int) -> None:
    """Put the child in its own process group from the parent too (no race with a quick kill)."""
    try:
        os.setpgid(pid, pid)
    except (PermissionError, ProcessLookupError):
        pass


def wait_child(pid: int, timeout: float) -> dict:
    """Wait up to ``timeout`` s; kill the child's process group when it overruns."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            if os.WIFSIGNALED(status):
                return {"status": "signal", "signal": os.WTERMSIG(status)}
            return {"status": "exit", "code": os.WEXITSTATUS(status)}
        if time.monotonic() > deadline:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            return {"status": "timeout"}
        time.sleep(0.005)


def _read_in_child(path: str, result: Path) -> int:
    """Child body of a ``read`` job: stream every frame, re-read the first two at source resolution."""
    from capsule_triage.errors import InputError
    from capsule_triage.frames import DecodeStats
    from capsule_triage.frames_at import read_frames_at
    from capsule_triage.reader import ReadOptions, read_frames

    stats = DecodeStats()
    try:
        first: list[tuple[int, float]] = []
        for batch in read_frames(path, ReadOptions(batch_size=8, short_side=64), stats):
            assert batch.data.dtype == np.uint8 and batch.data.shape[1:] == (64, 64, 3), batch.data.shape
            assert np.isfinite(batch.pts_seconds).all()
            first += list(zip(batch.frame_index.tolist(), batch.pts_seconds.tolist()))[: 2 - len(first)]
        read_frames_at(path, [i for i, _ in first], [t for _, t in first])
        result.write_text(json.dumps({"outcome": "frames", "frames": stats.frames_decoded, "skipped": stats.frames_skipped}))
        return 0
    except InputError as exc:
        result.write_text(json.dumps({"outcome": "error", "message": str(exc)}))
        return 0
    except BaseException:  # noqa: BLE001 - reported to the test, which fails
        result.write_text(json.dumps({"outcome": "exception", "traceback": traceback.format_exc()}))
        return 1


def fork_read(path: str, result: Path, *, memory_bytes: int | None = None) -> int:
    pid = os.fork()
    if pid:
        _own_group(pid)
        return pid
    code = 1
    try:
        os.setpgid(0, 0)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # ffmpeg's warnings stay out of the protocol
            os.dup2(null, fd)
        if memory_bytes:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        code = _read_in_child(path, result)
    finally:
        os._exit(code)


def serve() -> None:
    """Line protocol on stdin/stdout: one JSON job per line, one JSON reply per line.

    Jobs: ``{"kind": "cli", "args": [...], "stdout": path, "stderr": path, "timeout": s, "cwd": path|null}``
    runs the CLI; ``{"kind": "read", "path": p, "result": path, "timeout": s}`` runs the reader. Each
    job runs in a fresh forked child, so one interpreter's import cost (torch, timm, PyAV) is paid
    once for many runs, while a crash, a hang or a leak stays inside the child.
    """
    import capsule_triage.cli  # noqa: F401
    import capsule_triage.reader  # noqa: F401

    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # nothing else may write into the protocol
    replies.write(json.dumps({"ready": True}) + "\n")
    vm = _vm_size()
    for line in sys.stdin:
        job = json.loads(line)
        started = time.perf_counter()
        if job["kind"] == "cli":
            pid = fork_cli(job["args"], stdout=Path(job["stdout"]), stderr=Path(job["stderr"]), cwd=job.get("cwd"))
        else:
            pid = fork_read(job["path"], Path(job["result"]), memory_bytes=vm + (3 << 30) if vm else None)
        reply = wait_child(pid, job["timeout"])
        reply["seconds"] = round(time.perf_counter() - started, 3)
        replies.write(json.dumps(reply) + "\n")


def _vm_size() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"]:
        serve()
        return 0
    if argv[:1] == ["make"] and len(argv) == 2:
        from conftest import demo_clip_frames

        for case in make_cases(Path(argv[1]), demo_clip_frames()):
            result = "error: " + case.expect.error if case.expect.error else f"frames {case.expect.frames}, skipped {case.expect.skipped}"
            print(f"{case.name:28s} {result:60s} {case.what}")
        return 0
    print("usage: python tests/malformed.py make DIR | serve", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
