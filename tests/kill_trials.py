"""Kill ``triage run`` with SIGKILL at seeded random moments; the output must stay absent or whole.

Usage::

    python tests/kill_trials.py --clip CLIP --weights WEIGHTS --work DIR [--trials 12] [--seed 0] [--exec]

Each trial starts ``triage run CLIP --out DIR/out --force`` and kills it after a random delay: a third
of the delays are uniform over a whole run, a third fall between the moment a calibration run's staging
folder appeared and its end (thumbnails, Parquet, run.json, the report and the final renames), and a
third are 0-50 ms after the run's staging folder appears (so some kills surely land while the outputs
are being written). The calibration run before them leaves a complete DIR/out, which the first trials'
``--force`` runs replace. After every kill, ``DIR/out`` must be absent or complete
and valid: every Parquet file reads back with pyarrow and has the rows run.json announces, run.json
parses, every thumbnail decodes, the HTML report is whole. The only other things allowed beside it
are the hidden staging folders of the killed process; the final re-run must succeed and remove them.

By default runs start in forked children of this (warm) interpreter (the exact ``cli.main()`` of
``python -m capsule_triage.cli``, without paying the ~5 s import per trial, so delays land in the work
rather than in ``import torch``); ``--exec`` starts real ``python -m capsule_triage.cli`` processes.

Prints one JSON object (the trials and a verdict) and exits 0 when every check holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

OUTPUT_FILES = ("frames.parquet", "events.parquet", "top_frames.parquet", "run.json", "report.html")


def check_output(out: Path, *, frames: int | None = None, report: bool = True) -> list[str]:
    """Problems of a present output folder (empty list = complete and valid).

    Args:
        out: the output folder.
        frames: the number of frames it must hold (None = whatever run.json says).
        report: the HTML report must be there too.
    """
    import cv2
    import numpy as np
    import pyarrow.parquet as pq

    problems = []
    missing = [name for name in OUTPUT_FILES[: None if report else -1] if not (out / name).is_file()]
    if missing:
        return [f"missing {missing}"]
    try:
        run = json.loads((out / "run.json").read_text())
    except ValueError as exc:
        return [f"run.json does not parse: {exc}"]
    tables = {}
    for name in OUTPUT_FILES[:3]:
        try:
            tables[name] = pq.read_table(open(out / name, "rb"))  # a file object: the name may not be UTF-8
        except Exception as exc:  # noqa: BLE001 - any failure to read back is the finding
            problems.append(f"{name} does not read back: {type(exc).__name__}: {exc}")
    if problems:
        return problems
    if tables["frames.parquet"].num_rows != run["frames_decoded"] or run["frames_decoded"] != (frames or run["frames_decoded"]):
        problems.append(f"frames.parquet has {tables['frames.parquet'].num_rows} rows, run.json {run['frames_decoded']}, expected {frames}")
    if tables["events.parquet"].num_rows != run["events"]:
        problems.append(f"events.parquet has {tables['events.parquet'].num_rows} rows, run.json says {run['events']}")
    thumbs = {t for name in ("events.parquet", "top_frames.parquet") for t in tables[name]["thumbnail"].to_pylist() if t}
    for rel in sorted(thumbs):
        if cv2.imdecode(np.fromfile(out / rel, dtype=np.uint8), cv2.IMREAD_COLOR) is None:  # imread crashes on non-UTF-8 names
            problems.append(f"thumbnail {rel} does not decode")
    if report and not (out / "report.html").read_text(encoding="utf-8", errors="replace").rstrip().endswith("</html>"):
        problems.append("report.html is cut short")
    return problems


def leftovers(out: Path) -> list[str]:
    """Hidden staging / swapped-out folders beside ``out``."""
    return sorted(p.name for p in out.parent.iterdir() if re.match(rf"\.{re.escape(out.name)}\.(partial|replaced)-", p.name))


def start(args: list[str], work: Path, k: int, *, exec_mode: bool) -> tuple[int, subprocess.Popen | None]:
    stdout, stderr = work / f"trial{k}.out", work / f"trial{k}.err"
    if exec_mode:
        proc = subprocess.Popen([sys.executable, "-m", "capsule_triage.cli", *args], stdout=open(stdout, "w"),
                                stderr=open(stderr, "w"), start_new_session=True)
        return proc.pid, proc
    from malformed import fork_cli

    return fork_cli(args, stdout=stdout, stderr=stderr), None


def finish(pid: int, proc: subprocess.Popen | None, timeout: float) -> dict:
    if proc is not None:
        try:
            return {"status": "exit", "code": proc.wait(timeout)}
        except subprocess.TimeoutExpired:
            os.killpg(pid, signal.SIGKILL)
            proc.wait()
            return {"status": "timeout"}
    from malformed import wait_child

    return wait_child(pid, timeout)


def run_trials(clip: Path, weights: Path, work: Path, *, trials: int, seed: int, exec_mode: bool) -> dict:
    if not exec_mode:
        import capsule_triage.cli  # noqa: F401 - warm imports once; no torch op runs in this process
    work.mkdir(parents=True, exist_ok=True)
    out = work / "out"
    base = ["run", str(clip), "--weights", str(weights), "--out", str(out), "--force", "--quiet"]
    failures: list[str] = []

    # Calibration: two complete runs, the faster one timed (the first pays for a cold page cache: ~1.4x as long as the runs
    # after it; windows drawn from it alone left most "late" kills after the run's end: CI 2026-12-03, 5 of 12 killed). The
    # second writes OUT itself, so the first trials kill a --force run over a complete output, and times when its staging
    # folder appears: "late" kills fall between that and the end (rev52: from 0.6 of the run they missed the writing).
    calib = work / "calibration"
    whole, staged = float("inf"), None
    for attempt, args in ((-2, [*base[:4], "--out", str(calib), "--quiet"]), (-1, base)):
        started = time.perf_counter()
        pid, proc = start(args, work, attempt, exec_mode=exec_mode)
        while attempt == -1 and staged is None and time.perf_counter() - started < 300:
            if any(f"-{pid}-" in name for name in leftovers(out)):
                staged = time.perf_counter() - started
            elif out.exists() and not leftovers(out):  # done before its staging folder was seen
                break
            time.sleep(0.001)
        done = finish(pid, proc, 300)
        whole = min(whole, time.perf_counter() - started)
        if done != {"status": "exit", "code": 0}:
            return {"ok": False, "failures": [f"calibration run failed: {done}: {(work / f'trial{attempt}.err').read_text()[-2000:]}"]}
    staged = min(staged or 0.6 * whole, 0.9 * whole)
    import pyarrow.parquet as pq

    frames = pq.read_table(calib / "frames.parquet").num_rows
    rng = random.Random(seed)
    records = []
    for k in range(trials):
        mode = ("anytime", "late", "writing")[k % 3]
        window = {"anytime": (0, whole), "late": (0.8 * staged, 0.95 * whole), "writing": (0, 0.05)}[mode]
        delay = rng.uniform(*window)
        before = "complete" if out.exists() else "absent"
        t0 = time.perf_counter()
        pid, proc = start(base, work, k, exec_mode=exec_mode)
        if mode == "writing":  # wait until this run's staging folder exists, then kill within 50 ms
            while time.perf_counter() - t0 < 3 * whole + 10 and not any(f"-{pid}-" in name for name in leftovers(out)):
                time.sleep(0.001)
        time.sleep(delay)
        delay = time.perf_counter() - t0
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        result = finish(pid, proc, 300)
        killed = result.get("signal") == signal.SIGKILL or result.get("code") == -signal.SIGKILL
        state = "absent" if not out.exists() else "complete"
        problems = check_output(out, frames=frames) if out.exists() else []
        if not killed and result != {"status": "exit", "code": 0}:
            problems.append(f"run ended with {result} before the kill: {(work / f'trial{k}.err').read_text()[-2000:]}")
        if not killed and state != "complete":
            problems.append("run finished but left no output")
        records.append({"trial": k, "mode": mode, "delay_s": round(delay, 3), "killed": killed, "before": before, "after": state,
                        "killed_while_staging": any(f"-{pid}-" in name for name in leftovers(out))})
        failures += [f"trial {k} (kill after {delay:.3f} s): {p}" for p in problems]

    pid, proc = start(base, work, trials, exec_mode=exec_mode)  # the re-run after the last kill
    result = finish(pid, proc, 300)
    if result != {"status": "exit", "code": 0}:
        failures.append(f"re-run failed: {result}: {(work / f'trial{trials}.err').read_text()[-2000:]}")
    elif check_output(out, frames=frames) or leftovers(out):
        failures.append(f"re-run output invalid {check_output(out, frames=frames)} or leftovers {leftovers(out)}")
    return {"ok": not failures, "failures": failures, "whole_run_s": round(whole, 3), "staged_s": round(staged, 3), "frames": frames,
            "trials": records}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, required=True)
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True, help="Scratch folder (the output goes to WORK/out).")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--exec", dest="exec_mode", action="store_true", help="Real `python -m capsule_triage.cli` processes.")
    args = parser.parse_args(argv)
    summary = run_trials(args.clip.absolute(), args.weights.absolute(), args.work.absolute(), trials=args.trials,
                         seed=args.seed, exec_mode=args.exec_mode)
    print(json.dumps(summary, indent=1))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    # The verdict is the summary above. Skip interpreter teardown: once in 7 CI runs (2026-11-30) this harness,
    # after printing an all-ok summary, died in it with "terminate called without an active exception" (SIGABRT
    # from a native thread pool of a library it imports to check the outputs), failing a test whose trials passed.
    os._exit(code)
