"""How near the test frames of a manifest split by group are to its training frames (QA 120 #1).

A manifest's ``near_dup_group`` keeps each run of near-identical frames on one side of the split, but a video cut into
several such runs can put neighbouring runs on both sides: then a test frame has a near copy among the training frames
and the test figures are optimistic for new videos. This measures it: each frame as a 32 x 32 crop of its middle half
(levels 0-255 in each of the three colour channels), the distance of two frames the root mean square of their
difference over the crop's values; for
each test frame its nearest training frame (train and val rows), beside the distances of frames within one group (what
the grouping calls near-identical).

    python benchmarks/split_neighbours.py ../shared/data/wcebleedgen/manifest.csv [--json out.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

CROP = 32
CUTS = (10.0, 12.0, 15.0, 20.0)  # distances at which the test frames nearer a training frame are counted


def crops(paths: list[Path]) -> np.ndarray:
    """[N, CROP*CROP*3] float32: each image's middle half, scaled to CROP x CROP."""
    out = np.empty((len(paths), CROP * CROP * 3), np.float32)
    for i, path in enumerate(paths):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise SystemExit(f"{path}: cannot read it")
        h, w = image.shape[:2]
        middle = image[h // 4: h - h // 4, w // 4: w - w // 4]
        out[i] = cv2.resize(middle, (CROP, CROP), interpolation=cv2.INTER_AREA).reshape(-1)
    return out


def nearest(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``a``: the RMS distance to its nearest row of ``b``, and that row's index."""
    squared = (a ** 2).sum(1)[:, None] + (b ** 2).sum(1)[None, :] - 2 * a @ b.T
    index = squared.argmin(1)
    return np.sqrt(np.maximum(squared[np.arange(len(a)), index], 0) / a.shape[1]), index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    with open(args.manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    test = [r for r in rows if r["split"] == "test"]
    train = [r for r in rows if r["split"] in ("train", "val", "")]
    root = args.manifest.parent
    test_x, train_x = crops([root / r["path"] for r in test]), crops([root / r["path"] for r in train])
    distance, index = nearest(test_x, train_x)
    groups = defaultdict(list)
    for i, r in enumerate(test):
        groups[r["near_dup_group"]].append(i)
    within = []  # distances of frames to the nearest other frame of their own group
    for members in groups.values():
        if len(members) > 1:
            x = test_x[members]
            squared = (x ** 2).sum(1)[:, None] + (x ** 2).sum(1)[None, :] - 2 * x @ x.T
            np.fill_diagonal(squared, np.inf)
            within += list(np.sqrt(np.maximum(squared.min(1), 0) / x.shape[1]))
    same_label = np.array([test[i]["label"] == train[j]["label"] for i, j in enumerate(index)])
    near = {cut: distance <= cut for cut in CUTS}
    result = {
        "command": "python " + " ".join(map(shlex.quote, sys.argv)), "date": time.strftime("%Y-%m-%d %H:%M"),
        "manifest": str(args.manifest), "test_frames": len(test), "training_frames": len(train), "test_groups": len(groups),
        "test_frames_within": {f"{cut:g}": int(n.sum()) for cut, n in near.items()},
        "of_them_same_label": {f"{cut:g}": int((n & same_label).sum()) for cut, n in near.items()},
        "test_groups_with_such_a_frame": {f"{cut:g}": len({test[i]["near_dup_group"] for i in np.flatnonzero(n)})
                                          for cut, n in near.items()},
        "nearest_distances": [round(float(d), 2) for d in np.sort(distance)[:20]],
        "median_distance_to_nearest_training_frame": round(float(np.median(distance)), 2),
        "median_distance_within_a_test_group": round(float(np.median(within)), 2) if within else None,
        "examples": [(test[i]["path"], train[index[i]]["path"], round(float(distance[i]), 2))
                     for i in np.argsort(distance)[:10]],
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
