"""Where the decode share goes: H.264 decoding itself against the swscale pass to the model's input. A probe, not part of the product.

    python benchmarks/decode_split.py [--frames 1500] [--repeats 3]

Issue 6 asks decode + preprocess to stay within 25 % of end-to-end time; the study table measures 28-30 %
(``run_benchmarks.py study``: decode-only ~1,065 frames/s against ~322 end to end). This probe splits decode-only
on the simulated 336 px H.264 study (``run_benchmarks.py``'s 5,000-frame clip, made here if missing), one thread,
as the reader decodes (``video_colour.frame_rgb``, ``SWSCALE_THREADS``), the variants timed in turn:

* ``decode``: FFmpeg's H.264 decoder alone (frames decoded, never converted);
* ``decode, no deblocking``: the H.264 decoder told to skip its loop (deblocking) filter (``skip_loop_filter=all``):
  faster, but its frames are no longer the stream's (the largest difference from a full decode is given, and how far
  the shipped model's scores move on ``--scored`` frames decoded both ways);
* ``decode+rgb``: decoding and the reader's one swscale pass to 224 px RGB (area, full-width chroma, accurate rounding);
* ``reader``: ``reader.read_frames`` at 224 px, batches of 32 (the study table's decode-only);
* ``rgb pass``: the swscale pass alone, on ``--kept`` decoded frames held in memory (warm caches);
* ``yuv444 pass``: swscale resizing to 224 px Y'CbCr 4:4:4 without converting to RGB: what would remain of the pass
  if the model converted colours itself (a 3 x 3 matrix and a clip, before its normalisation);
* ``yuv420 pass``: resizing the planes as they are (chroma at half size): what would remain if the model also
  upsampled the chroma (two inputs, or one packed I420 tensor);
* ``two passes``, ``swscale+opencv``: other ways to the same RGB (resize to Y'CbCr 4:4:4, then convert; resize the
  planes, then OpenCV's I420 conversion), each with its largest difference from the reader's pass on the kept frames.

A variant's share is the reader's time with the RGB pass swapped for the variant's pass (both timed on the frames held in
memory), so the reader's batching and copies stay counted.

For each it gives the decode share the study would have (``results/study.json``, 50,000 frames: its measured share
scaled by the variant's time against the reader's in this run) and the speed decoding would need for 25 %.
Writes ``benchmarks/results/decode_split.json`` (``--results DIR``: DIR/decode_split.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import av
import cv2
import numpy as np

from clips import HERE, REPO, output_options, results_file  # benchmarks/ is the script's folder, so on sys.path

sys.path.insert(0, str(REPO))

from capsule_triage.frames import DecodeStats  # noqa: E402
from capsule_triage.read_options import ReadOptions  # noqa: E402
from capsule_triage.reader import read_frames  # noqa: E402
from capsule_triage.video_colour import RGB_CONVERSION, SWSCALE_THREADS, frame_rgb  # noqa: E402
from capsule_triage.versions import package_versions  # noqa: E402
from run_benchmarks import study_clip  # noqa: E402

SIZE = 224  # the shipped model's input


def _decoded(clip, limit: int, convert: bool, deblock: bool = True) -> int:
    return len(list(_frames(clip, limit, convert, deblock, keep=False)))


def _frames(clip, limit: int, convert: bool, deblock: bool, keep: bool = True):
    """Decode ``limit`` frames as the reader does (one thread), optionally without the deblocking filter; yields each
    frame (as 224 px RGB if ``convert``) when ``keep``, else None."""
    reformatter = av.video.reformatter.VideoReformatter()
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        stream.thread_type, stream.codec_context.thread_count = "SLICE", 1  # as the reader (decoder_threads 1)
        if not deblock:
            stream.codec_context.options = {**stream.codec_context.options, "skip_loop_filter": "all"}
        for count, frame in enumerate(container.decode(stream), 1):
            rgb = frame_rgb(reformatter, frame, SIZE, SIZE) if convert else None
            yield (rgb if convert else frame.to_ndarray(format="yuv420p")) if keep else None
            if count >= limit:
                return


def _read(clip, limit: int) -> int:
    count = 0
    for batch in read_frames(clip, ReadOptions(batch_size=32, short_side=SIZE), DecodeStats()):
        count += len(batch)
        if count >= limit:
            break
    return count


def _pass(frames, fmt: str) -> int:
    reformatter = av.video.reformatter.VideoReformatter()
    for frame in frames:
        reformatter.reformat(frame, width=SIZE, height=SIZE, format=fmt, interpolation=RGB_CONVERSION,
                             threads=SWSCALE_THREADS).to_ndarray()
    return len(frames)


def _other_rgb(frames, how: str) -> list[np.ndarray]:
    """The kept frames as 224 px RGB another way than the reader's one pass."""
    first, second = av.video.reformatter.VideoReformatter(), av.video.reformatter.VideoReformatter()
    out = []
    for frame in frames:
        if how == "two passes":
            planes = first.reformat(frame, width=SIZE, height=SIZE, format="yuv444p", interpolation=RGB_CONVERSION, threads=SWSCALE_THREADS)
            out.append(second.reformat(planes, format="rgb24", interpolation=RGB_CONVERSION, threads=SWSCALE_THREADS).to_ndarray())
        else:  # "swscale+opencv"
            planes = first.reformat(frame, width=SIZE, height=SIZE, format="yuv420p", interpolation=RGB_CONVERSION,
                                    threads=SWSCALE_THREADS).to_ndarray()
            out.append(cv2.cvtColor(planes, cv2.COLOR_YUV2RGB_I420))
    return out


def _scores_moved(clip, limit: int) -> dict:
    """How far the shipped model's abnormal-class score moves when the first ``limit`` frames are decoded without the
    deblocking filter (its default backend, 224 px RGB as the reader gives it)."""
    from capsule_triage import FrameBatch, load_classifier, load_pipeline

    classifier = load_classifier(load_pipeline("capsule-bleeding"))
    abnormal = list(classifier.config.abnormal_indices)

    def scores(deblock: bool) -> np.ndarray:
        frames = np.stack(list(_frames(clip, limit, True, deblock)))
        parts = [classifier(FrameBatch(frames[i:i + 32], np.arange(i, i + len(frames[i:i + 32]), dtype=np.int64),
                                       np.zeros(len(frames[i:i + 32])))).probs for i in range(0, len(frames), 32)]
        return np.concatenate(parts)[:, abnormal].max(axis=1)

    full, undeblocked = scores(True), scores(False)
    moved = np.abs(full - undeblocked)
    threshold = classifier.config.threshold
    flagged = (full >= threshold) != (undeblocked >= threshold)
    return {"frames": len(moved), "backend": classifier.selection["backend"], "max": round(float(moved.max()), 4),
            "p99": round(float(np.percentile(moved, 99)), 4), "mean": round(float(moved.mean()), 4),
            "threshold_crossings": int(flagged.sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1500, help="frames decoded per timing (default 1500)")
    parser.add_argument("--kept", type=int, default=300, help="decoded frames held for the pass-alone timings (default 300)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of all variants in turn (default 3)")
    parser.add_argument("--scored", type=int, default=2000, help="frames scored by the shipped model with and without "
                        "deblocking (default 2000; 0: none)")
    output_options(parser)
    args = parser.parse_args()
    out = results_file(args, "decode_split.json")
    clip = study_clip(5000)
    with av.open(str(clip)) as container:
        kept = [f for _, f in zip(range(args.kept), container.decode(video=0))]
    variants = {"decode": lambda: _decoded(clip, args.frames, False),
                "decode, no deblocking": lambda: _decoded(clip, args.frames, False, deblock=False), "decode+rgb": lambda: _decoded(clip, args.frames, True),
                "reader": lambda: _read(clip, args.frames), "rgb pass": lambda: _pass(kept, "rgb24"),
                "yuv444 pass": lambda: _pass(kept, "yuv444p"), "yuv420 pass": lambda: _pass(kept, "yuv420p"),
                "two passes": lambda: len(_other_rgb(kept, "two passes")), "swscale+opencv": lambda: len(_other_rgb(kept, "swscale+opencv"))}
    for fn in variants.values():
        fn()  # warm-up
    timings = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            frames = fn()
            timings[name].append((time.perf_counter() - start) / frames * 1e6)
    study_file = HERE / "results" / "study.json"  # the committed study table's (QA 127 #6: the 50,000-frame row, or a
    row = max(json.loads(study_file.read_text())["rows"], key=lambda row: row["frames"])  # StopIteration): its longest study
    e2e, study_share, study_frames = row["fps"], row["decode_share"], row["frames"]
    best = {name: min(us) for name, us in timings.items()}  # other work on the machine only slows a round down
    rows = [{"variant": name, "us_per_frame": [round(u, 1) for u in us], "best_us": round(best[name], 1),
             "fps": round(1e6 / best[name], 1)} for name, us in timings.items()]

    def swapped(name: str) -> float:  # the reader with another pass in place of its RGB pass
        return best["reader"] - best["rgb pass"] + best[name]

    shares = {"decode alone": best["decode"], "reader (as measured by the study)": best["reader"],
              "reader, pass to yuv444 (colours in the model)": swapped("yuv444 pass"),
              "reader, pass to yuv420 (chroma upsampling and colours in the model)": swapped("yuv420 pass"),
              "reader, H.264 without deblocking": best["reader"] - best["decode"] + best["decode, no deblocking"],
              "reader, two passes": swapped("two passes"), "reader, swscale + OpenCV": swapped("swscale+opencv")}
    reference = [frame_rgb(av.video.reformatter.VideoReformatter(), f, SIZE, SIZE) for f in kept]
    differs = {how: int(max(np.abs(a.astype(int) - b).max() for a, b in zip(_other_rgb(kept, how), reference)))
               for how in ("two passes", "swscale+opencv")}
    undeblocked = zip(_frames(clip, args.kept, False, False), _frames(clip, args.kept, False, True))
    differs["H.264 without deblocking (decoded planes)"] = int(max(np.abs(a.astype(int) - b).max() for a, b in undeblocked))
    undeblocked = zip(_frames(clip, args.kept, True, False), _frames(clip, args.kept, True, True))
    differs["H.264 without deblocking (224 px RGB)"] = int(max(np.abs(a.astype(int) - b).max() for a, b in undeblocked))
    moved = _scores_moved(clip, args.scored) if args.scored else None
    result = {"what": "decode_split", "command": "python benchmarks/decode_split.py " + " ".join(sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d %H:%M"), "clip": clip.name, "size": SIZE, "rows": rows,
              "study_end_to_end_fps": round(e2e, 1), "decode_fps_for_25_percent": round(e2e / 0.25, 1),
              "study_decode_share": round(study_share, 3), "study_row": {"file": str(study_file.relative_to(HERE.parent)), "frames": study_frames},
              # the study's measured share scaled by each variant's time against the reader's in this run (ratios within
              # one run: the machine's speed moves between runs, and the study's decode-only was timed in another)
              "share_at_study_speed": {k: round(study_share * us / best["reader"], 3) for k, us in shares.items()},
              "max_level_difference_from_the_readers_pass": differs,
              "shipped_model_scores_without_deblocking": moved,
              "versions": package_versions()}
    for row in rows:
        print(f"{row['variant']:<12} {row['best_us']:7.1f} us/frame ({row['fps']:7.1f} frames/s)  rounds: {row['us_per_frame']}")
    for name, share in result["share_at_study_speed"].items():
        print(f"share at {e2e:.0f} frames/s end to end: {name} {share:.1%}")
    for how, levels in differs.items():
        print(f"{how}: up to {levels} grey levels from the reader's pass")
    if moved:
        print(f"H.264 without deblocking: the shipped model's scores move by up to {moved['max']} (mean {moved['mean']}) "
              f"on {moved['frames']} frames; {moved['threshold_crossings']} cross its threshold")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"Wrote {out}")


if __name__ == "__main__":
    main()
