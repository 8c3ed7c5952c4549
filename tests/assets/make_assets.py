"""Regenerate the small derived assets committed under tests/assets/ from ../shared/data.

Source frames: WCEBleedGen (Zenodo 10156571), CC BY 4.0 — real wireless capsule endoscopy frames.
Run: python tests/assets/make_assets.py [SHARED_DATA_DIR]
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import av
import cv2

HERE = Path(__file__).resolve().parent
DEFAULT_SHARED = HERE.parents[2] / "shared" / "data"


def consecutive_frames(manifest: Path, split: str, label: str, count: int, skip_runs: int = 0) -> list[Path]:
    """``count`` frames of one run of consecutive frames (same near_dup_group, ordered by original name)."""
    rows = [r for r in csv.DictReader(open(manifest)) if r["split"] == split and r["label"] == label]
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["near_dup_group"], []).append(row)
    runs = sorted((g for g in groups.values() if len(g) >= count), key=lambda g: -len(g))
    run = runs[skip_runs]

    def number(row):
        digits = "".join(ch for ch in row["orig_name"] if ch.isdigit())
        return int(digits or 0)

    run.sort(key=number)
    return [manifest.parent / r["path"] for r in run[:count]]


def write_clip(frames: list[Path], out: Path, fps: int = 4) -> None:
    with av.open(str(out), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 224, 224, "yuv420p"
        stream.options = {"crf": "20", "preset": "medium"}
        for path in frames:
            rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def main(shared: Path) -> None:
    manifest = shared / "wcebleedgen" / "manifest.csv"
    normal = consecutive_frames(manifest, "test", "non-bleeding", 40, 0)  # the longest normal run
    segments = [
        ("non-bleeding", normal[:16]),
        ("bleeding", consecutive_frames(manifest, "test", "bleeding", 12, 1)),
        ("non-bleeding", normal[16:32]),
        ("bleeding", consecutive_frames(manifest, "test", "bleeding", 12, 2)),
        ("non-bleeding", normal[32:40]),
    ]
    frames = [p for _, seg in segments for p in seg]
    write_clip(frames, HERE / "demo_capsule_4fps.mp4")
    with open(HERE / "demo_capsule_4fps_frames.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["frame_index", "pts_seconds", "label", "source"])
        i = 0
        for label, seg in segments:
            for path in seg:
                writer.writerow([i, i / 4, label, f"wcebleedgen/{path.relative_to(manifest.parent)}"])
                i += 1
    print(f"wrote {HERE / 'demo_capsule_4fps.mp4'} ({len(frames)} frames)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SHARED)
