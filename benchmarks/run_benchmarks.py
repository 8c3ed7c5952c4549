"""Benchmarks of capsule_triage (see benchmarks/README.md). Ratios within one run are the result.

    python benchmarks/run_benchmarks.py compare      # naive loop vs defaults, 3 models x 2 clips
    python benchmarks/run_benchmarks.py compare --weights DIR [DIR ...]   # the same for these weights folders
    python benchmarks/run_benchmarks.py study        # simulated 5,000 / 50,000-frame studies: wall, RSS
    python benchmarks/run_benchmarks.py overlap      # model on 1 thread, decode on the other
    python benchmarks/run_benchmarks.py skip         # redundant-frame skipping on real consecutive frames
    python benchmarks/run_benchmarks.py decoders     # decode-only: one video over 1, 2, 3 decoder processes
    python benchmarks/run_benchmarks.py ceiling      # decode-only with both cores vs 10x the naive loop (issue 6)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
CACHE = HERE / ".cache"  # generated clips and random-weight folders (git-ignored)
RESULTS = HERE / "results"

from clips import SHARED, WEIGHTS, capsule_336, endoscope_720p, real_frames, write_clip  # noqa: E402
from naive import naive_fps  # noqa: E402

from capsule_triage import load_classifier, load_pipeline  # noqa: E402
from capsule_triage.bench import bench  # noqa: E402
from capsule_triage.cpu_info import LOADED_SHARE, OtherLoad, machine  # noqa: E402
from capsule_triage.model_config import ModelConfig  # noqa: E402
from capsule_triage.optimize import optimize  # noqa: E402
from capsule_triage.versions import package_versions  # noqa: E402
from capsule_triage.weights import create_model, save_weights  # noqa: E402

MODELS = {
    "default (capsule-bleeding-lite0)": dict(weights=WEIGHTS),
    "resnet50@224": dict(arch="resnet50", size=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    "resnetv2_50x1_bit@384": dict(arch="resnetv2_50x1_bit", size=384, mean=(0.5,) * 3, std=(0.5,) * 3),
}


def clips(frames: int = 240) -> dict[str, Path]:
    CACHE.mkdir(parents=True, exist_ok=True)
    real = real_frames(SHARED, 240)
    return {
        "336x336 capsule H.264": write_clip(CACHE / f"capsule336_{frames}.mp4", [capsule_336(f) for f in real], count=frames),
        "1280x720 endoscope H.264": write_clip(CACHE / f"endo720_{frames}.mp4", [endoscope_720p(f) for f in real[:60]], count=frames),
    }


def model_weights(name: str, spec: dict) -> Path:
    """The given weights folder as it is (the shipped model, ``--weights``), or a random-init 2-class model of the
    architecture (speed does not depend on weights), through ``triage optimize`` once."""
    if "weights" in spec:
        return spec["weights"]
    folder = CACHE / name.replace("@", "_")
    if not (folder / "config.json").exists():
        torch.manual_seed(0)
        config = ModelConfig(architecture=spec["arch"], class_names=["non-bleeding", "bleeding"], abnormal_classes=["bleeding"],
                             input_size=spec["size"], mean=spec["mean"], std=spec["std"], border="circle", name=name)
        save_weights(folder, create_model(config), config)
    if not (folder / "backends.json").exists():
        # Batch sizes above 8 are never the fastest for these models on a 2-core CPU, and timing them costs minutes.
        optimize(folder, [SHARED / "videos" / "wcebleedgen_mixed_triage_4fps.mp4"], batch_size=8, tune_batch_sizes=(1, 2, 4, 8))
    return folder


def compare(args) -> dict:
    pipeline = load_pipeline("capsule-bleeding")
    rows = []
    models = {f"weights {w}": dict(weights=w) for w in args.weights} if args.weights else MODELS
    for name, spec in models.items():
        weights = model_weights(name, spec)
        classifier = load_classifier(pipeline, weights=str(weights))
        cfg = classifier.config
        for clip_name, clip in clips().items():
            model = create_model(cfg)
            model.load_state_dict(classifier_state(weights))

            def naive() -> float:
                return naive_fps(clip, model, size=cfg.input_size, mean=cfg.mean, std=cfg.std, min_seconds=args.seconds)

            # The naive loop before and after capsule_triage's stages, so that a slow or fast spell of the
            # machine weighs on both sides of the ratio.
            load = OtherLoad()  # QA 91 #3: the naive loop (PyTorch's threads on every core) collapses under load, ours less
            before = naive()
            row = bench(clip, pipeline, classifier, min_seconds=args.seconds)  # batch and threads as `triage optimize` tuned them
            after = naive()
            others = load.cores()
            row["other_processes_cpus_row"] = None if others is None else round(others, 2)
            said = any(w.startswith("other processes") for w in row.get("warnings", []))  # bench's own (rev87 #7: said twice)
            if others is not None and others > LOADED_SHARE * load.cpus and not said:
                row["warnings"] = [*row.get("warnings", []), f"other processes used {others:.2f} of the {load.cpus} CPUs over this row "
                                   "(naive loop included): the ratio to the naive loop is not this machine's; run on an idle machine"]
            row["naive_fps_before_after"] = [round(before, 2), round(after, 2)]
            row["naive_fps"] = round((before + after) / 2, 2)
            row["speedup_vs_naive"] = round(row["fps"]["end_to_end"] / row["naive_fps"], 2)
            row.update(model_name=name, clip=clip_name)
            rows.append(row)
            print(f"{name:34s} {clip_name:26s} naive {row['naive_fps']:7.1f}  e2e {row['fps']['end_to_end']:7.1f} "
                  f"({row['backend']})  x{row['speedup_vs_naive']}", flush=True)
            for warning in row.get("warnings", []):  # in the JSON only before (QA 91 #3)
                print(f"  Warning: {warning}", flush=True)
    return {"rows": rows}


def classifier_state(weights: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(weights) / "model.safetensors"))


STUDY_RUN = """
import json, sys, time
from capsule_triage import RunOptions, load_classifier, load_pipeline, triage_study
from capsule_triage.bench import peak_rss_mb
from capsule_triage.pipeline import read_batch_size

clip, out = sys.argv[1], sys.argv[2]
p = load_pipeline()
c = load_classifier(p)
t = time.perf_counter()
r = triage_study(clip, p, c, RunOptions(out=out, force=True))
wall = time.perf_counter() - t
rss = peak_rss_mb()  # before the model-only measurement below, which imports torch (for decode_all's module)
from capsule_triage.optimize import decode_all, measure_fps
frames = decode_all(clip, c.config.input_size, limit=64)[0]
model_fps = measure_fps(c.backend, frames, read_batch_size(p.read.batch_size, c), min_seconds=10)
from capsule_triage.reader import ReadOptions, read_frames
read, decoded, t = ReadOptions(batch_size=32, short_side=c.config.input_size), 0, time.perf_counter()
for batch in read_frames(clip, read):  # decode alone, as the pipeline reads (first 5,000 frames)
    decoded += len(batch)
    if decoded >= 5000:
        break
decode_fps = decoded / (time.perf_counter() - t)
decoder_rss = r.run["decoder_peak_rss_mb"] or 0.0  # None: decoded in this process, counted in rss
print(json.dumps(dict(frames=r.frames, wall_seconds=wall, fps=r.fps, events=r.events, backend=c.backend.name,
                      decoded_in=r.run["decoded_in"], stage_seconds=r.run["stage_seconds"], peak_rss_mb=rss, decoder_peak_rss_mb=decoder_rss,
                      peak_rss_mb_with_decoder=rss + decoder_rss, model_only_fps=model_fps, decode_only_fps=decode_fps,
                      end_to_end_over_model_only=r.fps / model_fps,
                      cost_ratio=(1 / r.fps) / (1 / decode_fps + 1 / model_fps), decode_share=(1 / decode_fps) / (1 / r.fps))))
"""


def study(args) -> dict:
    """Each length in its own process, so peak RSS is that run's own; the backend's model-only speed
    is measured in the same process afterwards, so the ratio survives a noisy machine."""
    rows = []
    for frames in args.lengths:
        clip = study_clip(frames)
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", STUDY_RUN, str(clip), str(CACHE / f"study_out_{frames}")],
                             capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["process_seconds"] = round(time.perf_counter() - started, 1)
        rows.append(row)
        print(row, flush=True)
    return {"rows": rows}


def overlap(args) -> dict:
    """The model on one thread, decoding on the other core (in a child process, or in a thread of the
    same process): end-to-end vs the slowest stage, on the 5,000-frame study clip. (On a 240-frame
    clip the per-study fixed costs, probe, thumbnails, Parquet and report, are ~10% of the time and
    would be counted as lost overlap.)"""
    torch.set_num_threads(1)
    pipeline = load_pipeline("capsule-bleeding")
    classifier = load_classifier(pipeline, threads=1)
    clip = study_clip(5000)
    rows = []
    for where in ("thread", "process"):
        row = bench(clip, pipeline, classifier, min_seconds=args.seconds, decode_in=where)
        slowest = min(row["fps"]["decode"], row["fps"]["model"])
        row["end_to_end_over_slowest_stage"] = round(row["fps"]["end_to_end"] / slowest, 3)
        print(where, row["fps"], row["end_to_end_over_slowest_stage"], flush=True)
        rows.append(row)
    return {"rows": rows}


def decoders(args) -> dict:
    """Decode-only frames/s of the 5,000-frame study clip at 224 px, as the pipeline reads it: in this
    process, in one child process, and split over several (keyframe-aligned parts, one process each).
    What a GPU could be fed; on this 2-core machine more than 2 processes only share the cores."""
    from capsule_triage.frames import DecodeStats
    from capsule_triage.reader import ReadOptions, read_frames
    from capsule_triage.reader_process import read_frames_in_process

    clip, read = study_clip(5000), ReadOptions(batch_size=32, short_side=224)
    ways = {"in this process": lambda: read_frames(clip, read, DecodeStats())}
    for n in args.processes:
        ways[f"{n} process(es)"] = lambda n=n: read_frames_in_process(clip, read, DecodeStats(), processes=n)
    rows = {name: [] for name in ways}
    for _ in range(args.repeats):  # alternating, so drift of the machine hits every way alike
        for name, batches in ways.items():
            start = time.perf_counter()
            frames = sum(len(b) for b in batches())
            rows[name].append(round(frames / (time.perf_counter() - start), 1))
    base = max(rows["in this process"])
    result = [dict(way=name, frames=frames, fps=fps, best_over_in_process=round(max(fps) / base, 2)) for name, fps in rows.items()]
    for row in result:
        print(row, flush=True)
    return {"rows": result}


def ceiling(args) -> dict:
    """How far end to end could go on each compare clip, against issue 6's 10x the naive loop (default model).

    ``triage run``'s time per frame is, measured, the decode-only time plus the model-only time
    (compare's cost ratio 0.97-1.07: the two share the cores). So end to end can never beat decoding to
    the model's input with both cores decoding and no model at all (measured, and ideally twice one
    thread's speed), and 10x the naive loop needs a model that adds at most ``1 / (10 x naive) - 1 / decode``
    seconds per frame (at the ideal decode speed: the most generous bound). Measured in one run: the naive
    loop (before and after), decode-only as the pipeline reads (one and two decoder threads, two decoder
    processes), and the model-only speed of every backend of the shipped model (calls of a read batch, split
    into its tuned runs and streams), the ones the agreement check rejects too."""
    from capsule_triage.frames import DecodeStats
    from capsule_triage.optimize import measure_fps
    from capsule_triage.pipeline import RunOptions, model_read_options
    from capsule_triage.reader import read_frames
    from capsule_triage.reader_process import read_frames_in_process

    pipeline = load_pipeline("capsule-bleeding")
    classifier = load_classifier(pipeline, weights=str(WEIGHTS))
    cfg = classifier.config
    model = create_model(cfg)
    model.load_state_dict(classifier_state(WEIGHTS))
    read = model_read_options(pipeline.read, classifier, RunOptions())
    if args.frames <= read.batch_size:  # QA 127 #2: recorded 0 frames/s and rendered "none reaches 10x"; rev112 #4: said early
        raise SystemExit(f"ceiling: --frames {args.frames} is one read batch ({read.batch_size} frames) or less: the first batch "
                         f"is not timed, so nothing would be; give more than {read.batch_size}")
    rows, frames_for_model = [], None
    for clip_name, clip in clips(args.frames).items():
        before = naive_fps(clip, model, size=cfg.input_size, mean=cfg.mean, std=cfg.std, min_seconds=args.seconds)
        ways = {"1 thread": lambda: read_frames(clip, replace(read, decoder_threads=1), DecodeStats()),
                "2 threads": lambda: read_frames(clip, replace(read, decoder_threads=2), DecodeStats()),
                "2 processes": lambda: read_frames_in_process(clip, replace(read, decoder_threads=1), DecodeStats(), processes=2)}
        decode = {name: [] for name in ways}
        for _ in range(args.repeats):
            for name, batches in ways.items():
                # Timed from the first batch on, as the naive loop is from its third frame: opening the file and
                # starting the decoder processes are per-study costs (rev31: they counted against decoding only)
                stream = batches()
                first = next(stream).data
                frames_for_model = first if frames_for_model is None else frames_for_model
                start, frames = time.perf_counter(), 0
                for batch in stream:
                    frames += len(batch)
                decode[name].append(round(frames / (time.perf_counter() - start), 1))
        after = naive_fps(clip, model, size=cfg.input_size, mean=cfg.mean, std=cfg.std, min_seconds=args.seconds)
        naive = (before + after) / 2
        best = max(max(v) for v in decode.values())
        ideal = 2 * max(decode["1 thread"])  # both cores decoding without any loss: the most decoding could give
        budget = 1 / (10 * naive) - 1 / max(best, ideal)  # seconds per frame left to the model for 10x, at the ideal
        rows.append(dict(clip=clip_name, frames=args.frames, naive_fps_before_after=[round(before, 1), round(after, 1)],
                         naive_fps=round(naive, 1), ten_times_naive_fps=round(10 * naive, 1), decode_fps=decode,
                         best_decode_fps=best, ceiling_over_naive=round(best / naive, 2), ideal_decode_fps=round(ideal, 1),
                         ideal_ceiling_over_naive=round(max(best, ideal) / naive, 2),
                         model_fps_needed_for_10x=round(1 / budget, 0) if budget > 0 else None))
        print(rows[-1], flush=True)
    backends = {}
    for name in ("ov-fp32", "ov-bf16", "ov-int8", "ort-int8", "torch-fp32"):
        try:
            candidate = load_classifier(pipeline, weights=str(WEIGHTS), backend=name)
        except Exception as exc:  # not installed / not native on this CPU: say so in the results
            backends[name] = f"not measured: {exc}".splitlines()[0]
            continue
        calls = model_read_options(pipeline.read, candidate, RunOptions()).batch_size  # as triage run calls it (split into runs)
        backends[name] = round(measure_fps(candidate.backend, frames_for_model, calls, min_seconds=args.seconds), 1)
        print(name, backends[name], flush=True)
    return {"rows": rows, "model_only_fps": backends,
            "accepted_backend": classifier.backend.name}


def study_clip(frames: int) -> Path:
    """A simulated study of ``frames`` frames at 4 fps, 336 x 336, cycling through real frames."""
    CACHE.mkdir(parents=True, exist_ok=True)  # QA 21: study, overlap and decoders failed on a fresh clone (only compare made it)
    path = CACHE / f"study336_{frames}.mp4"
    return path if path.exists() else write_clip(path, (capsule_336(f) for f in real_frames(SHARED, 1869)), count=frames, fps=4)


def skip(args) -> dict:
    """Score every frame vs skip near-duplicates, on clips of real consecutive frames (and on the
    assembled 5,000-frame study, if `study` made it): events, flagged frames and scores compared."""
    from capsule_triage import RunOptions, triage_study
    import numpy as np
    import pyarrow.parquet as pq

    pipeline = load_pipeline("capsule-bleeding")
    classifier = load_classifier(pipeline)
    rows, scores = [], {}
    inputs = sorted((SHARED / "videos").glob("wcebleedgen_*_4fps.mp4")) + sorted(CACHE.glob("study336_5000.mp4"))
    for clip in inputs:
        for threshold in [None] + list(args.thresholds):
            start = time.perf_counter()
            result = triage_study(clip, pipeline, classifier, RunOptions(out=CACHE / f"skip_{clip.stem}_{threshold}", force=True,
                                                                         skip_duplicates=threshold, report=False))
            seconds = time.perf_counter() - start
            events = pq.read_table(result.out_dir / "events.parquet").select(["start_frame", "end_frame", "peak_frame"]).to_pylist()
            frames = pq.read_table(result.out_dir / "frames.parquet", columns=["score", "flagged"])
            scores[clip.name, threshold] = (np.asarray(frames.column("score")), frames.column("flagged").to_pylist())
            rows.append(dict(clip=clip.name, threshold=threshold, seconds=round(seconds, 3), fps=round(result.frames / seconds, 1),
                             reused=result.run["frames_reused_as_duplicates"], frames=result.frames, events=events))
            print(rows[-1]["clip"], threshold, rows[-1]["reused"], rows[-1]["fps"], flush=True)
    baseline = {r["clip"]: r for r in rows if r["threshold"] is None}
    for r in rows:
        base_scores, base_flagged = scores[r["clip"], None]
        own_scores, own_flagged = scores[r["clip"], r["threshold"]]
        r["events_identical_to_scoring_every_frame"] = r["events"] == baseline[r["clip"]]["events"]
        r["flagged_identical"] = own_flagged == base_flagged
        r["max_score_difference"] = round(float(np.abs(own_scores - base_scores).max()), 4)
        r["speedup"] = round(r["fps"] / baseline[r["clip"]]["fps"], 3)
    return {"rows": rows}


def main() -> None:
    global CACHE  # --cache: the subcommands read it
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["compare", "study", "overlap", "skip", "decoders", "ceiling"])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--frames", type=int, default=1200, help="ceiling: frames of each clip")
    parser.add_argument("--lengths", type=int, nargs="+", default=[5000, 50000])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    parser.add_argument("--weights", type=Path, nargs="+", help="compare: these weights folders (each run as the default model "
                        "is, with --backend auto: run triage optimize on each first) instead of the three models; written to compare_weights.json")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the results JSON (default benchmarks/results; "
                        "another for a run that must not touch the checkout, QA 76 #2)")
    parser.add_argument("--cache", type=Path, default=CACHE, help="folder of the generated clips and random-weight folders "
                        "(default benchmarks/.cache)")
    args = parser.parse_args()
    CACHE = args.cache
    result = globals()[args.what](args)
    result.update(what=args.what, command=" ".join(["python", "benchmarks/run_benchmarks.py", *sys.argv[1:]]),
                  date=time.strftime("%Y-%m-%d %H:%M"), versions=package_versions(), cpu=machine()["processor"],
                  machine=machine(), commit=package_versions().get("capsule-triage-commit"))  # QA 35: AMX or not, and which code
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{args.what}{'_weights' if args.what == 'compare' and args.weights else ''}.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
