"""Stopping a run or a batch from outside: Ctrl-C, SIGTERM (a scheduler's stop) and SIGKILL.

The promise: exit 130 with one line (no traceback) on Ctrl-C or SIGTERM, nothing half-written, no
process left behind — a killed batch's workers die with it instead of writing into OUT_DIR without
the lock — and the summary lists every study whose folder is in OUT_DIR.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import DEMO_CLIP

STUDIES = 6


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _wait_gone(pids: set[int], seconds: float = 20) -> set[int]:
    deadline = time.monotonic() + seconds
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _alive(pids)


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "capsule_triage.cli", *map(str, args)]


def _wait_for(condition, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert proc.poll() is None, "the command ended before it could be stopped"
        assert time.monotonic() < deadline, "timed out waiting for the moment to stop the command"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("interrupts") / "studies"
    root.mkdir()
    for i in range(STUDIES):  # distinct bytes (a trailing tag FFmpeg ignores): identical copies share one output
        shutil.copy(DEMO_CLIP, root / f"study_{i}.mp4")
        with open(root / f"study_{i}.mp4", "ab") as fh:
            fh.write(f"study {i}".encode())
    return root


def _study_folders(out: Path) -> set[str]:
    return {p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")} if out.exists() else set()


@contextlib.contextmanager
def _started(*args) -> Iterator[subprocess.Popen]:
    """``triage ARGS`` in its own process group, which is killed on the way out whatever happened."""
    proc = subprocess.Popen(_cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        yield proc
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _batch_args(studies: Path, out: Path, weights: Path, engine: str = "local") -> tuple:
    parallel = ("--workers", 2) if engine == "local" else ("--engine", "ray")
    return ("batch", studies, "--out", out, "--weights", weights, *parallel, "--quiet")


def _needs(engine: str) -> None:
    if engine == "ray":
        pytest.importorskip("ray", reason='ray is not installed (pip install "capsule-triage[ray]"); CI installs it')


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_killed_batch_takes_its_workers_with_it(engine, studies, random_weights, tmp_path):
    """QA 19: a Ray actor installed a whole study after its batch's kill -9 (Ray noticed seconds later)."""
    _needs(engine)
    out = tmp_path / "out"
    with _started(*_batch_args(studies, out, random_weights, engine)) as proc:
        _wait_for(lambda: len(_study_folders(out)) >= 1, proc)
        workers = _descendants(proc.pid)
        assert len(workers) >= 2, workers
        proc.kill()
        proc.wait()
        done = _study_folders(out)
        assert len(done) < STUDIES, "every study finished before the kill"
        if engine == "local":
            assert _wait_gone(workers) == set(), "workers outlived the killed batch"
        else:  # the study actors end themselves; Ray's own agents take their time (up to a minute)
            actors = {pid for pid in workers if "StudyWorker" in _command(pid)}
            assert actors and _wait_gone(actors) == set(), "study actors outlived the killed batch"
        assert _study_folders(out) == done, "a study was installed after the batch was killed"
    rerun = subprocess.run(_cli("batch", studies, "--out", out, "--weights", random_weights, "--quiet"),
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    rows = pq.read_table(out / "studies.parquet").to_pylist()
    assert sorted(r["status"] for r in rows) == sorted(["skipped"] * len(done) + ["ok"] * (STUDIES - len(done)))


@pytest.mark.parametrize("how, engine", [("ctrl-c", "local"), ("sigterm", "local"), ("sigterm", "ray"), ("sighup", "local")])
def test_interrupted_batch_stops_now_and_lists_what_is_done(how, engine, studies, random_weights, tmp_path):
    """QA 19: with --engine ray, SIGTERM exited 15 with Ray's stack dump and no summary (ray.init put in
    its own handler)."""
    _needs(engine)
    out = tmp_path / "out"
    with _started(*_batch_args(studies, out, random_weights, engine)) as proc:
        _wait_for(lambda: len(_study_folders(out)) >= 1, proc)
        workers = _descendants(proc.pid)
        if how == "ctrl-c":  # the terminal signals the whole foreground process group
            os.killpg(proc.pid, signal.SIGINT)
        else:  # a scheduler stopping the batch process; SIGHUP: its terminal closed (QA 51: exit 129, lock and .work left)
            proc.send_signal(signal.SIGHUP if how == "sighup" else signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
        assert _wait_gone(workers, 60) == set(), "processes left behind"  # Ray's agents may take their time on a loaded machine
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1].startswith("Interrupted; studies.parquet lists what is done"), stderr
    rows = {r["study_id"]: r["status"] for r in pq.read_table(out / "studies.parquet").to_pylist()}
    done = _study_folders(out)
    assert len(rows) == STUDIES and done and len(done) < STUDIES
    assert {sid for sid, status in rows.items() if status == "ok"} == done, (rows, done)
    assert not (out / ".work").exists() and not (out / ".batch.lock").exists()


def test_sigterm_ends_a_run_like_ctrl_c(random_weights, tmp_path):
    """Stopped while the decoder process runs: exit 130, one line, no output, no staging, no child left."""
    out = tmp_path / "out"
    with _started("run", DEMO_CLIP, "--weights", random_weights, "--out", out, "--decode-in", "process",
                  "--batch-size", 1, "--quiet") as proc:
        _wait_for(lambda: bool(_descendants(proc.pid)), proc)
        children = _descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
        assert _wait_gone(children) == set(), "decoder process left behind"
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines() == [f"Interrupted; nothing was written for {DEMO_CLIP}."], stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_ctrl_c_while_the_decoder_process_imports_is_one_line(random_weights, tmp_path):
    """CI 2026-12-03: a Ctrl-C that reached a child before it had run a line of its own (while it imported numpy and
    PyAV here, torch and timm in a batch worker) printed the child's KeyboardInterrupt traceback."""
    out = tmp_path / "out"
    with _started("run", DEMO_CLIP, "--weights", random_weights, "--out", out, "--decode-in", "process", "--quiet") as proc:
        deadline = time.monotonic() + 120
        while not _descendants(proc.pid):  # polled tightly: the child is seconds from its first line of its own
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it started its decoder"
            time.sleep(0.001)
        children = _descendants(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
        assert _wait_gone(children) == set(), "decoder process left behind"
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines() == [f"Interrupted; nothing was written for {DEMO_CLIP}."], stderr
    assert not out.exists()


def test_a_worker_spawned_while_group_signals_are_blocked_keeps_a_ctrl_c_pending_until_it_ignores_it():
    """The mechanism under both: a SIGINT raised in a worker before its first task (as a Ctrl-C during its imports)
    waits, blocked, and is discarded by ignore_group_signals; one in this process is delivered when the block ends.
    Without the block (the control) the same SIGINT breaks the worker."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from capsule_triage.interrupts import ignore_group_signals, starting_children

    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn, initializer=signal.raise_signal, initargs=(signal.SIGINT,)) as pool:
        with starting_children():
            first = pool.submit(signal.sigpending)
        assert first.result(timeout=60) == {signal.SIGINT}
        assert pool.submit(ignore_group_signals).result(timeout=60) is None
        assert pool.submit(signal.sigpending).result(timeout=60) == set()
        assert pool.submit(signal.pthread_sigmask, signal.SIG_BLOCK, []).result(timeout=60) == set()
    parent = ("import signal\nfrom capsule_triage.interrupts import starting_children\ntry:\n    with starting_children():\n"
              "        signal.raise_signal(signal.SIGINT)\n        print('pending' if signal.sigpending() == {signal.SIGINT} else 'not')\n"
              "except KeyboardInterrupt:\n    print('delivered when the block ended')\n")  # not in this test process (see test_evaluate)
    done = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, timeout=120)
    assert done.stdout.splitlines() == ["pending", "delivered when the block ended"], (done.stdout, done.stderr)
    with ProcessPoolExecutor(1, mp_context=spawn, initializer=signal.raise_signal, initargs=(signal.SIGINT,)) as pool:
        with pytest.raises(BrokenProcessPool):
            pool.submit(signal.sigpending).result(timeout=60)


def test_a_batch_whose_terminal_closes_stops_as_if_interrupted(studies, random_weights, tmp_path):
    """rev44: on a closed terminal every write fails (EIO): the closing lines raised, exit 1 instead of 130. The batch
    runs on a pseudo-terminal, which is closed (its hangup: SIGHUP to the session and its foreground group), then
    hung up again as a shell does (rev45: a second SIGHUP interrupted the cleanup the first one started)."""
    import pty
    import select

    out = tmp_path / "out"
    try:
        pid, terminal = pty.fork()
    except OSError as exc:
        pytest.skip(f"no pseudo-terminal here ({exc})")
    if pid == 0:  # the child: a session on the pseudo-terminal, as a login shell's job
        try:
            os.execv(sys.executable, _cli(*_batch_args(studies, out, random_weights)))
        finally:
            os._exit(127)
    status = None
    try:
        deadline = time.monotonic() + 180
        while not _study_folders(out):
            assert time.monotonic() < deadline, "timed out waiting for the first study"
            if select.select([terminal], [], [], 0.05)[0]:
                try:
                    os.read(terminal, 65536)  # what the batch draws, read so that it never blocks on a full terminal
                except OSError:
                    break
        workers = _descendants(pid)
        os.close(terminal)  # the terminal goes away
        terminal = None
        for _ in range(2):
            os.killpg(pid, signal.SIGHUP)  # as a shell hangs up its jobs (the kernel's own may come first)
            time.sleep(0.05)
        deadline = time.monotonic() + 120
        while status is None:
            done, code = os.waitpid(pid, os.WNOHANG)
            status = code if done else None
            assert status is not None or time.monotonic() < deadline, "the batch did not end after its hangup"
            time.sleep(0.05)
        assert _wait_gone(workers, 60) == set(), "processes left behind"
    finally:
        if terminal is not None:
            os.close(terminal)
        if status is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 130
    rows = {r["study_id"]: r["status"] for r in pq.read_table(out / "studies.parquet").to_pylist()}
    assert len(rows) == STUDIES and {sid for sid, status in rows.items() if status == "ok"} == _study_folders(out)
    assert "failed" not in rows.values(), rows  # workers ignore the hangup: none died of it
    assert not (out / ".work").exists() and not (out / ".batch.lock").exists()
    assert "interrupted" in (out / "batch.log").read_text()
