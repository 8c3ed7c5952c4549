"""Render benchmarks/results/*.json as the markdown tables in benchmarks/README.md.

    python benchmarks/tables.py > /tmp/tables.md
    python benchmarks/tables.py --results /tmp/res   # a run_benchmarks.py --results folder
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from capsule_triage.report_svg import score_text  # noqa: E402  a ratio never printed onto 1 it does not reach

RESULTS = Path(__file__).resolve().parent / "results"


def load(name: str, results: Path = RESULTS) -> dict | None:
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _table(data: dict, columns: list[str], rows: list[list]) -> str:
    """The command and date that produced ``data``, then a markdown table."""
    cpu = data.get("cpu", "").strip(" \t:")  # older files kept the separator of /proc/cpuinfo
    head = f"`{data['command']}` — {data['date']}" + (f", {cpu}" if cpu else "")
    lines = [head, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def compare_table(data: dict) -> str:
    columns = ["model", "clip", "naive loop fps (before, after)", "decode fps", "model-only fps", "end-to-end fps",
               "backend (runs x streams x threads; read batch)", "e2e / naive", "e2e cost / (decode + model)", "decode share of e2e",
               "e2e without per-study work fps (thumbnails s per pass)", "that / naive"]
    return _table(data, columns, [
        [r["model_name"], r["clip"], _naive(r), f"{r['fps']['decode']:.0f}", f"{r['fps']['model']:.1f}",
         f"{r['fps']['end_to_end']:.1f}", f"{r['backend']} ({_layout(r)})", f"**{r['speedup_vs_naive']:.1f}x**",
         f"{r['cost_ratio']:.2f}", f"{100 * r['decode_share']:.0f}%", *_scoring(r)] for r in data["rows"]])


def _naive(row: dict) -> str:
    """The mean of the naive loop timed before and after capsule_triage's stages (one figure in older results)."""
    if "naive_fps_before_after" not in row:
        return f"{row['naive_fps']:.1f}"
    before, after = row["naive_fps_before_after"]
    return f"{row['naive_fps']:.1f} ({before:.1f}, {after:.1f})"


def _scoring(row: dict) -> list[str]:
    """The decode-and-score stream alone (results from before it was recorded have no such column)."""
    if "scoring" not in row["fps"]:
        return ["-", "-"]
    return [f"{row['fps']['scoring']:.1f} ({row['stage_seconds']['thumbnails']:.2f})", f"{row['fps']['scoring'] / row['naive_fps']:.1f}x"]


def _layout(row: dict) -> str:
    """'runs of B x S streams x T threads; read R': how the backend ran."""
    threads = row["threads"]
    return f"runs of {row['run_batch_size']} x {threads.get('streams', 1)} x {threads.get('inference', threads.get('torch')) or 'engine-chosen'}; read {row['batch_size']}"


def study_table(data: dict) -> str:
    columns = ["frames (336x336 H.264, 4 fps)", "wall s", "end-to-end frames/s", "decode-only frames/s", "model-only frames/s",
               "end-to-end / model-only", "e2e cost / (decode + model)", "decode share of e2e", "backend", "decoding in", "events",
               "peak RSS MB (main + decoder process)", "of the wall s: thumbnails / other"]
    return _table(data, columns, [
        [f"{r['frames']:,}", f"{r['wall_seconds']:.0f}", f"{r['fps']:.1f}", f"{r['decode_only_fps']:.0f}", f"{r['model_only_fps']:.1f}",
         f"{r['end_to_end_over_model_only']:.2f}", f"{r['cost_ratio']:.2f}", f"{100 * r['decode_share']:.0f}%", r["backend"],
         r["decoded_in"], r["events"], f"{r['peak_rss_mb']:.0f} + {r['decoder_peak_rss_mb']:.0f}",
         f"{r['stage_seconds']['thumbnails']:.1f} / {r['stage_seconds']['other']:.1f}" if "stage_seconds" in r else "-"] for r in data["rows"]])


def overlap_table(data: dict) -> str:
    columns = ["decoding in", "frames", "decode fps", "model-only fps (1 thread)", "end-to-end fps", "end-to-end / slowest stage"]
    return _table(data, columns, [
        [r["decoded_in"], f"{r['frames_per_pass']:,}", f"{r['fps']['decode']:.0f}", f"{r['fps']['model']:.1f}",
         f"{r['fps']['end_to_end']:.1f}", f"**{r['end_to_end_over_slowest_stage']:.2f}**"] for r in data["rows"]])


def skip_table(data: dict) -> str:
    columns = ["clip", "threshold", "frames", "reused (not scored)", "frames/s", "speed-up", "events (start, end, peak) identical",
               "flagged frames identical", "max score difference"]
    return _table(data, columns, [
        [r["clip"], r["threshold"] if r["threshold"] is not None else "off", r["frames"], r["reused"], f"{r['fps']:.1f}",
         f"{r['speedup']:.2f}x", r["events_identical_to_scoring_every_frame"], r["flagged_identical"],
         f"{r['max_score_difference']:.3f}"] for r in data["rows"]])


def decoders_table(data: dict) -> str:
    columns = ["decoding (5,000-frame 336x336 study clip, to 224 px)", "frames/s (alternating runs)", "best / in this process"]
    return _table(data, columns, [
        [r["way"], ", ".join(f"{v:,.0f}" for v in r["fps"]), f"**{r['best_over_in_process']:.2f}x**"] for r in data["rows"]])


def ceiling_table(data: dict) -> str:
    """Per clip: the naive loop, decoding alone with both cores, and the model speed 10x would need; then every backend."""
    columns = ["clip (default model)", "naive loop fps (before, after)", "10x naive fps", "decode-only fps: 1 thread / 2 threads / 2 processes",
               "best decode / naive", "ideal decode (2 x 1 thread) / naive: the ceiling", "model-only fps needed for 10x (at the ideal)"]
    table = _table(data, columns, [
        [r["clip"], _naive(r), f"{r['ten_times_naive_fps']:.0f}",
         " / ".join(", ".join(f"{v:,.0f}" for v in fps) for fps in r["decode_fps"].values()), f"{r['ceiling_over_naive']:.1f}x",
         f"**{r['ideal_ceiling_over_naive']:.1f}x**" if "ideal_ceiling_over_naive" in r else "-",
         f"{r['model_fps_needed_for_10x']:,.0f}" if r["model_fps_needed_for_10x"] else "**none reaches 10x**"] for r in data["rows"]])
    speeds = ", ".join(f"{name} {fps if isinstance(fps, str) else f'{fps:,.0f}'}" for name, fps in data["model_only_fps"].items())
    return f"{table}\n\nModel-only frames/s of the shipped model's backends in the same run (the check accepts {data['accepted_backend']}): {speeds}."


def compression_table(data: dict) -> str:
    """Per encoding of the test frames: its bits per pixel and how the shipped model's scores moved; then the floors."""
    columns = ["codec", "setting", "KB a frame", "bits per pixel", "max / p95 / mean score change", "frames crossing the threshold",
               "flagged (PNG: %.1f%%)" % (100 * data["flagged_png"]), f"ROC AUC (PNG: {score_text(data['auc_png'], 4)})"]
    table = _table(data, columns, [[r["family"], r["setting"], f"{r['kb_per_frame']:.2f}", f"{r['bits_per_pixel']:.3f}",
                                    f"{r['max']:.3f} / {r['p95']:.3f} / {r['mean']:.4f}", f"{r['crossings']} of {data['frames']}",
                                    f"{100 * r['flagged']:.1f}%", score_text(r["auc"], 4)] for r in data["rows"]])
    floors = ", ".join(f"{family} {value:g}" for family, value in data["floors"].items())
    return f"{table}\n\nFloors (bits per pixel where {data['crossing_limit']:.0%} of the frames cross the threshold): {floors}."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])  # QA 127 #5: --help printed the tables
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the results JSON (default benchmarks/results)")
    args = parser.parse_args()
    found = 0
    for name, render in (("compare", compare_table), ("study", study_table), ("overlap", overlap_table), ("decoders", decoders_table),
                         ("skip", skip_table), ("ceiling", ceiling_table), ("compression", compression_table)):
        data = load(name, args.results)
        if data:
            found += 1
            print(f"### {name}\n\n{render(data)}\n")
    if not found:  # rev112 #7: an empty or mistyped folder printed nothing, exit 0
        raise SystemExit(f"tables.py: no results JSON (compare.json, study.json, ...) in {args.results}")


if __name__ == "__main__":
    main()
