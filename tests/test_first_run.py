"""What a new user meets first (QA 22, a fresh clone): the version, the help, the lines a run ends
with, and the mistakes typed in a first hour (a quoted ``~``, a frame folder without ``--fps``)."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
from pathlib import Path

import av
import pyarrow.parquet as pq

from capsule_triage import __version__
from conftest import DEMO_CLIP, encode_clip, triage, write_frame_folder


def _demo_frames(count: int = 24) -> list:
    with av.open(str(DEMO_CLIP)) as container:
        return [frame.to_ndarray(format="rgb24") for _, frame in zip(range(count), container.decode(video=0))]


def test_version_and_short_help():
    for flag in ("--version", "-V"):
        done = triage(flag)
        assert done.returncode == 0 and re.fullmatch(rf"capsule-triage {re.escape(__version__)}( \([0-9a-f]{{12}}\))?",
                                                     done.stdout.strip()), done.stdout + done.stderr
    done = triage("run", "-h")
    assert done.returncode == 0 and "Score every frame of SOURCE" in done.stdout


def test_two_sources_point_to_batch():
    done = triage("run", "a.mp4", "b.mp4")
    assert done.returncode == 2 and done.stderr.strip() == ("Error: Got unexpected extra argument(s) (b.mp4) (one SOURCE per run: "
                                                            "`triage batch FOLDER --out DIR` triages every study in a folder)")


def test_help_shows_the_hub_revision_syntax():
    """Rich read ``[@REVISION]`` as markup and dropped it: the help said ``hf-hub:OWNER/REPO`` only."""
    def said(*command: str) -> str:  # the help unwrapped (click breaks lines after a hyphen too)
        done = triage(*command, "--help", env={"COLUMNS": "400"})
        assert done.returncode == 0, done.stderr
        return " ".join(re.sub(r"-\n\s+", "-", done.stdout).split())

    for command in ("run", "batch"):
        assert "hf-hub:OWNER/REPO[@REVISION]" in said(command)
    # QA 45: "[default: 0.15, ...]" was dropped the same way
    assert "whole groups (default: 0.15, or 0 when rows already hold test)." in said("split")


def test_every_help_reads_whole_at_80_columns():
    """QA 121 #1/#3: at 80 columns (a terminal's default, a cron mail) Rich's option tables cut ten descriptions with
    an ellipsis (``hf-hub:OWNER/REPO[@REVI…``, ``[default: tf_efficientnet_lite0]``) and put ``<bool>`` after every
    flag; click's help wraps every word and names no type for a flag. QA 123 #2: it wrapped after hyphens too, so a
    preset or option name copied from the terminal ('capsule- bleeding', '--no- report') did not work; #3: `triage --help`
    cut every command's summary with '...'; #4: `--check <list[Path]>` (repeated, not a list)."""
    import typer
    from typer.testing import CliRunner

    from capsule_triage.cli import app

    for name in ["", *typer.main.get_command(app).commands]:
        result = CliRunner().invoke(app, [*([name] if name else []), "--help"], env={"COLUMNS": "80"})
        lines = result.output.splitlines()
        assert result.exit_code == 0 and lines[0].startswith("Usage: ") and f" {name} [OPTIONS]".replace("  ", " ") in lines[0], result.output
        assert "\u2026" not in result.output and "<bool>" not in result.output and "\\[" not in result.output, result.output
        assert max(map(len, lines)) <= 80, result.output
        assert not [line for line in lines if re.search(r"\w-$", line)], result.output  # QA 123 #2: 'capsule-' / 'bleeding'
        assert not [line for line in lines[1:] if line.endswith("...")], result.output  # QA 123 #3: the command list cut short
        assert not [line for line in lines if re.match(r"\s+-.*<list\[", line)], result.output  # QA 123 #4: `--check <list[Path]>`


def test_a_quoted_tilde_is_refused_not_made_into_a_folder(tmp_path, random_weights):
    """``--out '~/x'`` created a folder named ``~`` in the working directory (``rm -rf ~`` to clean it up)."""
    shutil.copy(DEMO_CLIP, tmp_path / "study.mp4")
    done = triage("run", "study.mp4", "--weights", random_weights, "--out", "~/x", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip() == (
        f"Error: ~/x: begins with '~', which the shell did not expand (quoted?): it would create a folder named '~' in {tmp_path}; "
        "give the path unquoted or with $HOME (a folder really named so: its full path)"), done.stderr
    done = triage("batch", ".", "--out", "~/nightly", "--weights", random_weights, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("Error: ~/nightly: begins with '~'"), done.stderr
    done = triage("batch", "~/studies", "--out", "nightly", "--weights", random_weights, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip() == (
        f"Error: {tmp_path / '~/studies'}: input folder not found ('~' was not expanded by the shell: quoted? in Python, os.path.expanduser)"), done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.mp4"]
    # review rev21: names that merely begin with '~' are names (the first fix refused the default output '~clip_triage')
    shutil.copy(DEMO_CLIP, tmp_path / "~clip.mp4")
    for args in (("./~clip.mp4",), ("./~clip.mp4", "--out", "./~out")):
        done = triage("run", *args, "--weights", random_weights, "--quiet", "--no-report", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    assert (tmp_path / "~clip_triage" / "run.json").is_file() and (tmp_path / "~out" / "run.json").is_file()
    done = triage("run", "~/study.mp4", "--weights", random_weights, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip() == (
        "Error: ~/study.mp4: no such file or directory ('~' was not expanded by the shell: quoted? in Python, os.path.expanduser)")
    # QA 113 #3: a quoted '~' in --pipeline or --weights was said only for the input
    for option, what in (("--pipeline", "pipeline preset file not found"), ("--weights", "weights not found")):
        done = triage("run", "study.mp4", option, "~/mine/p.toml" if option == "--pipeline" else "~/mine/w", "--out", "o", cwd=tmp_path)
        assert done.returncode == 2 and done.stderr.strip().endswith(
            f"{what} ('~' was not expanded by the shell: quoted? in Python, os.path.expanduser)"), done.stderr


def test_an_empty_out_is_refused_not_read_as_the_current_folder(tmp_path, random_weights):
    """``--out ''`` (or ``-o "$UNSET"``) was read as '.': a batch wrote its tables into the working directory."""
    shutil.copy(DEMO_CLIP, tmp_path / "study.mp4")
    for args in (("run", "study.mp4"), ("batch", ".")):
        for flag in ("--out", "-o"):
            done = triage(*args, "--weights", random_weights, flag, "", cwd=tmp_path)
            assert done.returncode == 2 and done.stderr.strip() == (
                f"Error: Invalid value for '--out' / '-o': is empty: give a folder (. for the current one) (see 'triage {args[0]} --help')")
    done = triage("train", ".", "--output", " ", cwd=tmp_path)
    assert done.returncode == 2 and "is empty: give a folder" in done.stderr, done.stderr
    done = triage("eval", random_weights, ".", "-o", "", cwd=tmp_path)  # QA 27: eval had no -o
    assert done.returncode == 2 and "Invalid value for '--out' / '-o': is empty: give a folder" in done.stderr, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.mp4"]


def test_an_existing_file_as_out_is_named_without_suggesting_force(tmp_path, random_weights):
    """It said "use --force to replace it", and with --force "exists and is not a directory"."""
    (tmp_path / "notes.txt").write_text("mine")
    done = triage("run", DEMO_CLIP, "--weights", random_weights, "--out", tmp_path / "notes.txt")
    assert done.returncode == 2 and done.stderr.strip() == f"Error: {tmp_path / 'notes.txt'}: output path exists and is not a folder"
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_run_ends_naming_its_review_page(tmp_path, random_weights):
    done = triage("run", DEMO_CLIP, "--weights", random_weights, "--out", tmp_path / "o", "--quiet")
    assert done.returncode == 0 and done.stdout.splitlines()[-2:] == [f"Wrote {tmp_path / 'o'}", f"Review page: {tmp_path / 'o' / 'report.html'}"]
    done = triage("run", DEMO_CLIP, "--weights", random_weights, "--out", tmp_path / "n", "--quiet", "--no-report")
    assert done.returncode == 0 and done.stdout.splitlines()[-1] == f"Wrote {tmp_path / 'n'}"
    from capsule_triage.versions import checkout_commit
    from conftest import REPO

    record = json.loads((tmp_path / "n" / "run.json").read_text())
    versions = record["versions"]  # QA 24: which code ran
    from capsule_triage.cpu_info import machine  # QA 60 #3: and on which CPU (lower precisions score by its instructions)

    assert record["host"]["cpu"] == {k: v for k, v in machine().items() if k != "host"} and record["host"]["logical_cpus"] >= record["host"]["cpu"]["cpus"] >= 1
    assert versions.get("capsule-triage-commit") == checkout_commit(REPO) and versions["capsule-triage"] == __version__
    if (REPO / ".git").exists():  # CI's clean clone: a commit, not None == None (review rev22)
        assert re.fullmatch(r"[0-9a-f]{40}", versions["capsule-triage-commit"])


def test_a_frame_folder_read_at_the_presets_rate_says_so(tmp_path, random_weights):
    """A 4 fps export read at the preset's 2 fps had every time off by 2x, and nothing said so."""
    folder = write_frame_folder(_demo_frames(), tmp_path / "export")
    done = triage("run", folder, "--weights", random_weights, "--out", tmp_path / "a", "--quiet")
    line = (f"{folder}: frames read at 2 frames/s (the preset's folder_fps, a typical capsule rate; no timestamps.csv times the images, and names are not read as times): "
            "give --fps F (or, to triage run, --timestamps CSV), or put a timestamps.csv (filename,pts_seconds) in the folder, if that is not their rate")
    assert done.returncode == 0 and done.stderr.strip() == f"Warning: {line}", done.stderr
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run["warnings"] == [line] and run["parameters"]["read"]["folder_fps_from"] == "preset"
    assert html.escape("(the preset's folder_fps 2: the images carry no times)") in (tmp_path / "a" / "report.html").read_text()
    done = triage("run", folder, "--weights", random_weights, "--out", tmp_path / "b", "--quiet", "--fps", "4")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert json.loads((tmp_path / "b" / "run.json").read_text())["warnings"] == []


def test_batch_takes_the_per_study_options_of_run(tmp_path, random_weights):
    """`triage batch` had no --fps, --threshold, --top-k, --batch-size or --skip-duplicates: frame-folder
    studies were always read at 2 fps; its progress bar went into logs that are not a terminal."""
    write_frame_folder(_demo_frames(), tmp_path / "in" / "export")
    shutil.copy(DEMO_CLIP, tmp_path / "in" / "clip.mp4")
    done = triage("batch", tmp_path / "in", "--out", tmp_path / "o1", "--weights", random_weights, "--no-report")
    line = ("1 frame-folder study (export) read at 2 frames/s, the preset's rate (no timestamps.csv times "
            "the images, and names are not read as times): give --fps F, or a timestamps.csv (filename,pts_seconds) in each "
            "folder, if that is not their rate")
    assert done.returncode == 0 and done.stderr.strip() == f"Warning: {line}", done.stderr
    assert f"warning {line}" in (tmp_path / "o1" / "batch.log").read_text()
    assert "2 studies: 2 ok" in done.stdout
    again = triage("batch", tmp_path / "in", "--out", tmp_path / "o1", "--weights", random_weights, "--no-report")
    assert again.returncode == 0 and again.stderr == "" and "2 skipped" in again.stdout  # QA 88 #2: a cron mail every night
    done = triage("batch", tmp_path / "in", "--out", tmp_path / "o2", "--weights", random_weights, "--no-report",
                  "--fps", "4", "--threshold", "0.3", "--top-k", "2", "--batch-size", "8", "--skip-duplicates", "1.5")
    assert done.returncode == 0 and done.stderr == "", done.stderr  # no bar either: stderr is not a terminal
    rows = {r["kind"]: r for r in pq.read_table(tmp_path / "o2" / "studies.parquet").to_pylist()}
    folder = tmp_path / "o2" / rows["frames"]["study_id"]
    times = pq.read_table(folder / "frames.parquet").column("pts_seconds").to_pylist()
    assert times[:3] == [0.0, 0.25, 0.5]
    run = json.loads((folder / "run.json").read_text())
    assert run["parameters"]["rank"]["enter_threshold"] == 0.3 and run["parameters"]["rank"]["top_k"] == 2
    assert run["parameters"]["read"]["batch_size"] == 8 and run["parameters"]["skip_duplicates"] == 1.5
    assert pq.read_table(folder / "top_frames.parquet").num_rows <= 2


def _write_times(folder: Path, step: float) -> Path:
    names = sorted(p.name for p in folder.iterdir() if p.suffix == ".png")
    csv = folder / "timestamps.csv"
    csv.write_text("filename,pts_seconds\n" + "".join(f"{name},{3 + i * step}\n" for i, name in enumerate(names)))
    return csv


def _times(study: Path) -> list[float]:
    return pq.read_table(study / "frames.parquet").column("pts_seconds").to_pylist()


def test_a_frame_folder_s_own_timestamps_csv_times_it_in_run_and_batch(tmp_path, random_weights):
    """QA 31 (left for later): `triage batch` has no per-study --timestamps, so an export that writes its
    frames' times beside them was read at one rate, the CSV ignored; run needed --timestamps typed."""
    folder = write_frame_folder(_demo_frames(8), tmp_path / "in" / "export")
    csv = _write_times(folder, 0.25)
    write_frame_folder(_demo_frames(8), tmp_path / "in" / "untimed")
    done = triage("run", folder, "--weights", random_weights, "--out", tmp_path / "a", "--quiet")
    assert done.returncode == 0 and done.stderr == "", done.stderr  # no "read at 2 frames/s" warning
    assert _times(tmp_path / "a") == [3 + i * 0.25 for i in range(8)]
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    read = run["parameters"]["read"]
    assert read["timestamps_csv"] == str(csv) and read["timestamps_from"] == "folder" and "folder_fps_from" not in read
    assert "folder_fps" not in read  # QA 80 #6: it was there, 2.0, a rate these times were not read at
    assert html.escape("4.00 frames/s (times from the folder's timestamps.csv)") in (tmp_path / "a" / "report.html").read_text()
    # review rev31: --fps typed for one study is the way to read it at a fixed rate (the CSV won before, with no way out)
    done = triage("run", folder, "--weights", random_weights, "--out", tmp_path / "b", "--quiet", "--fps", "2.5")
    line = f"{csv}: not used: --fps 2.5 reads the frames at a fixed rate"
    assert done.returncode == 0 and done.stderr.strip() == f"Warning: {line}", done.stderr
    run = json.loads((tmp_path / "b" / "run.json").read_text())
    assert _times(tmp_path / "b")[:3] == [0.0, 0.4, 0.8] and run["warnings"] == [line]
    assert run["parameters"]["read"]["folder_fps_from"] == "--fps" and run["parameters"]["read"]["timestamps_csv"] is None
    other = tmp_path / "other.csv"  # a CSV named on the command line is the one used
    shutil.copy(csv, other)
    other.write_text(other.read_text().replace(",3", ",1"))
    done = triage("run", folder, "--weights", random_weights, "--out", tmp_path / "c", "--quiet", "--timestamps", other)
    assert done.returncode == 0 and _times(tmp_path / "c")[0] == 1.0, done.stderr
    line = f"{csv}: not used: {other} times the frames"  # QA 77 #7: said for --fps, not for --timestamps
    assert f"Warning: {line}" in done.stderr.splitlines() and line in json.loads((tmp_path / "c" / "run.json").read_text())["warnings"]
    assert json.loads((tmp_path / "c" / "run.json").read_text())["parameters"]["read"]["own_timestamps_unused"] == "--timestamps"
    assert json.loads((tmp_path / "c" / "run.json").read_text())["parameters"]["read"]["timestamps_from"] == "--timestamps"
    # QA 36 L7: the input hash covered the folder's own CSV when --fps or --timestamps OTHER timed the frames instead
    from capsule_triage.source_state import source_sha256

    sha = {k: json.loads((tmp_path / k / "run.json").read_text())["input"]["sha256"] for k in "abc"}
    assert sha["a"] == source_sha256(folder) and sha["b"] == sha["c"] == source_sha256(folder, own_csv=False) != sha["a"]

    def batch(timed: int = 1) -> dict:  # a batch's --fps is for its folders without times: the others keep theirs, said once
        done = triage("batch", tmp_path / "in", "--out", tmp_path / "o", "--weights", random_weights, "--no-report", "--fps", "4")
        studies = f"{timed} frame-folder {'study' if timed == 1 else 'studies'}"
        line = f"Warning: {studies} timed by {'its' if timed == 1 else 'their'} own timestamps.csv: --fps 4 is for the folders without one"
        assert done.returncode == 0 and done.stderr.strip() == line, done.stderr
        return {r["study_id"]: r for r in pq.read_table(tmp_path / "o" / "studies.parquet").to_pylist()}

    for path in (tmp_path / "in").rglob("*"):  # written a minute ago: settled, so a re-run may skip them (source_state)
        os.utime(path, (path.stat().st_atime - 60, path.stat().st_mtime - 60))
    rows = batch()
    timed, untimed = (next(r for r in rows.values() if r["study_id"].startswith(name)) for name in ("export", "untimed"))
    assert _times(tmp_path / "o" / timed["study_id"]) == _times(tmp_path / "a")
    assert _times(tmp_path / "o" / untimed["study_id"])[:2] == [0.0, 0.25]  # --fps 4 for the folder without times
    shutil.copytree(folder, tmp_path / "in" / "copy", copy_function=shutil.copy2)  # the same export under another name
    for path in (tmp_path / "in" / "copy").rglob("*"):
        os.utime(path, (path.stat().st_atime - 60, path.stat().st_mtime - 60))
    rows = batch()  # QA 36: the copy reused the outputs with the original's CSV path and warning (QA 88 #2: the original, skipped, not said again)
    (copied,) = (r for r in rows.values() if r["study_id"].startswith("copy"))
    assert copied["status"] == "reused" and rows[timed["study_id"]]["status"] == "skipped", rows
    run = json.loads((tmp_path / "o" / copied["study_id"] / "run.json").read_text())
    assert run["parameters"]["read"]["timestamps_csv"] == str(tmp_path / "in" / "copy" / "timestamps.csv")
    assert run["warnings"] == [f"{tmp_path / 'in' / 'copy'}: --fps 4 not used: the folder's timestamps.csv gives its frames' times"]
    _write_times(folder, 0.5)  # the export's times corrected: that study is scored again, the others kept
    rows = batch()  # the export, scored again, is said; its copy, skipped, is not (QA 88 #2)
    assert rows[timed["study_id"]]["status"] == "ok" and rows[untimed["study_id"]]["status"] == "skipped"
    assert _times(tmp_path / "o" / timed["study_id"])[:2] == [3.0, 3.5]
    # review rev31: a timing file of another format, which such a folder may have held before the CSV was looked for
    (folder / "timestamps.csv").write_text("frame,time\n0,0.0\n")
    done = triage("run", folder, "--weights", random_weights, "--out", tmp_path / "d", "--quiet")
    line = f"{csv}: not used as the frames' times (it has no header with columns filename,pts_seconds): read at 2 frames/s"
    assert done.returncode == 0 and f"Warning: {line}" in done.stderr.splitlines(), done.stderr
    assert _times(tmp_path / "d")[:2] == [0.0, 0.5]
    done = triage("batch", tmp_path / "in", "--out", tmp_path / "o", "--weights", random_weights, "--no-report")  # review rev32: said
    assert done.returncode == 0 and ("Warning: 1 frame-folder study read at a fixed rate although it has a timestamps.csv without the "
                                     f"columns filename,pts_seconds, e.g. {folder}") in done.stderr.splitlines(), done.stderr


def test_fps_is_a_finite_rate_in_run_and_batch(tmp_path):
    """QA 77 #10: --fps nan was refused as "Input should be greater than or equal to 0.001"."""
    from typer.testing import CliRunner

    from capsule_triage.cli import app

    for command in (["run", str(tmp_path)], ["batch", str(tmp_path), "-o", str(tmp_path / "o")]):
        for value in ("nan", "0", "inf", "-2", "1e-320", "abc"):  # (1e-320: times overflowed to infinity, rev77)
            result = CliRunner().invoke(app, [*command, "--fps", value], env={"COLUMNS": "250"})
            said = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())  # typer's box, unwrapped
            expected = ("'abc' is not a number of frames per second" if value == "abc" else
                        f"a frame rate is a finite number of frames per second, at least 0.001, got {value}")
            assert result.exit_code == 2 and expected in said, said
    assert not (tmp_path / "o").exists()


def test_a_timestamp_csv_in_milliseconds_is_said(tmp_path, random_weights):
    """QA 77 #2: times in milliseconds read as seconds made a 20-frame study 10,000 s long and a lone frame a 500 s event,
    without a word (the same folder in seconds: no warning, the first run of the test above)."""
    folder = write_frame_folder(_demo_frames(8), tmp_path / "export")
    csv = _write_times(folder, 250)  # 4 frames/s, in ms
    done = triage("run", folder, "--weights", random_weights, "--out", tmp_path / "o", "--quiet")
    line = (f"{csv}: its frames are a median 250 s apart: if its pts_seconds are milliseconds (a capsule records 0.5-6 frames "
            "a second), divide them by 1000; events and durations follow these times")
    assert done.returncode == 0 and done.stderr.strip() == f"Warning: {line}", done.stderr
    assert json.loads((tmp_path / "o" / "run.json").read_text())["warnings"] == [line]


def test_first_mistakes_with_presets_backends_and_devices_are_told_plainly(tmp_path, monkeypatch):
    """A Python list of presets without a suggestion, a folder called "file not found", a preset's own
    file name typed from another folder, a tuple of backends, and 'CPU' refused for its case."""
    import pytest

    from capsule_triage import load_pipeline
    from capsule_triage.classifier import choose_backend
    from capsule_triage.device import resolve_device
    from capsule_triage.errors import TriageError

    with pytest.raises(TriageError) as err:
        load_pipeline("capsule-bleding")
    assert str(err.value).startswith("capsule-bleding: no such pipeline preset; did you mean capsule-bleeding? (known: capsule-bleeding, ")
    with pytest.raises(TriageError, match="is a folder, not a pipeline preset file"):
        load_pipeline(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TriageError) as err:
        load_pipeline("capsule-bleeding.toml")
    assert str(err.value) == ("capsule-bleeding.toml: pipeline preset file not found (the preset capsule-bleeding is given "
                              "by its name: --pipeline capsule-bleeding)")
    with pytest.raises(ValueError) as err:
        choose_backend("fast", "cpu", None, "x")
    assert str(err.value) == ("--backend must be auto or one of torch-fp32, torch-bf16, torch-fp16, ort-fp32, ort-int8, ov-fp32, "
                              "ov-bf16, ov-int8, got 'fast'")
    assert str(resolve_device("CPU")) == "cpu"


def test_an_install_without_presets_says_where_they_come_from(tmp_path):
    """QA 24 (a wheel, which carries no pipelines/ or weights/): 'no such pipeline preset (known: )'; a checkout's
    preset given by path then looked for its weights in site-packages and suggested training into it."""
    from conftest import REPO

    home = tmp_path / "home"
    home.mkdir()
    done = triage("run", DEMO_CLIP, "--out", tmp_path / "o", env={"CAPSULE_TRIAGE_HOME": str(home)})
    assert done.returncode == 2 and done.stderr.strip() == (
        f"Error: capsule-bleeding: no such pipeline preset: {home / 'pipelines'} holds no presets (CAPSULE_TRIAGE_HOME={home} "
        "should be a checkout holding pipelines/ and weights/), or give --pipeline FILE.toml"), done.stderr
    done = triage("run", DEMO_CLIP, "--out", tmp_path / "o", "--quiet", "-p", REPO / "pipelines" / "capsule-bleeding.toml",
                  env={"CAPSULE_TRIAGE_HOME": str(home)})
    assert done.returncode == 0, done.stderr
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    assert run["model"]["weights_path"] == str(REPO / "weights" / "capsule-bleeding-lite0")
    # review rev22: CAPSULE_TRIAGE_HOME's own weights still win when it has them (the checkout's only stand in)
    shutil.copytree(REPO / "weights" / "capsule-bleeding-lite0", home / "weights" / "capsule-bleeding-lite0")
    done = triage("run", DEMO_CLIP, "--out", tmp_path / "o2", "--quiet", "-p", REPO / "pipelines" / "capsule-bleeding.toml",
                  env={"CAPSULE_TRIAGE_HOME": str(home)})
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "o2" / "run.json").read_text())["model"]["weights_path"] == str(home / "weights" / "capsule-bleeding-lite0")
    # QA 107 #7: the default preset's shipped weights missing from an install were to be trained anew (`triage train ... -o`
    # into the install); they ship with the package: reinstall
    shutil.copytree(REPO / "pipelines", home / "pipelines")
    shutil.rmtree(home / "weights")
    done = triage("run", DEMO_CLIP, "--out", tmp_path / "o3", env={"CAPSULE_TRIAGE_HOME": str(home)})
    assert done.returncode == 2 and not (tmp_path / "o3").exists() and done.stderr.strip() == (
        f"Error: {home / 'weights' / 'capsule-bleeding-lite0'}: the weights of pipeline 'capsule-bleeding' ship with "
        "capsule-triage and this installation lacks them: reinstall it, or set CAPSULE_TRIAGE_HOME to a checkout holding "
        "weights/, or pass --weights PATH"), done.stderr


def test_an_installed_wheel_carries_the_presets_and_shipped_weights(tmp_path):
    """QA 24 (left for later since): a wheel, or a non-editable `pip install .` (a Dockerfile's), carried no
    pipelines/ or weights/, so `triage run video.mp4` failed until CAPSULE_TRIAGE_HOME named a checkout.
    The wheel is built from this checkout and installed into a new environment (its dependencies from
    this one's site-packages), then run from a folder outside any checkout."""
    import subprocess
    import sys
    import sysconfig
    import tomllib
    import zipfile

    from conftest import REPO

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    shipped = {p.parent.name for p in (REPO / "weights").glob("*/config.json")}
    assert {k.rsplit("/", 1)[1] for k in declared if k.startswith("share/capsule-triage/weights/")} == shipped  # none left out
    source = tmp_path / "source"  # a copy: setuptools builds in the tree (build/), and the checkout stays as it is
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for name in ("capsule_triage", "pipelines", "weights"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "checkpoint"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q", "-w", str(tmp_path / "dist")],
                           capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel, = (tmp_path / "dist").glob("capsule_triage-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for name in (*(f"pipelines/{p.name}" for p in (REPO / "pipelines").glob("*.toml")),
                 *(f"weights/{p.parent.name}/{p.name}" for p in (REPO / "weights").glob("*/*"))):
        assert any(n.endswith(f".data/data/share/capsule-triage/{name}") for n in names), name
    env_dir = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=120)
    python = env_dir / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], capture_output=True,
                          text=True, check=True).stdout.strip()
    (Path(site) / "outer.pth").write_text(sysconfig.get_path("purelib") + "\n")  # torch, PyAV, ... from this environment
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CAPSULE_TRIAGE_HOME", "PYTHONPATH")}
    run = subprocess.run([python, "-m", "capsule_triage.cli", "run", str(DEMO_CLIP), "--out", "o", "--quiet"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    record = json.loads((work / "o" / "run.json").read_text())
    home = env_dir / "share" / "capsule-triage"
    assert record["model"]["weights_path"] == str(home / "weights" / "capsule-bleeding-lite0")
    assert record["pipeline"]["source"] == str(home / "pipelines" / "capsule-bleeding.toml")
    assert record["events"] == 2 and record["model"]["backend"].endswith("fp32"), record  # the shipped model, as from the checkout
    located = subprocess.run([python, "-c", "import capsule_triage; print(capsule_triage.__file__)"], capture_output=True, text=True,
                             cwd=work, env=env).stdout
    assert located.startswith(str(env_dir)), located  # the wheel's package ran, not this checkout's
    # QA 107 #1: another package's `pipelines` beside the installed one hid the wheel's presets ("holds no presets")
    (Path(site) / "pipelines").mkdir()
    (Path(site) / "pipelines" / "__init__.py").write_text("")
    run = subprocess.run([python, "-m", "capsule_triage", "run", str(DEMO_CLIP), "--out", "o2", "--quiet"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=300)  # #9: `python -m capsule_triage` is the command
    assert run.returncode == 0 and json.loads((work / "o2" / "run.json").read_text())["events"] == 2, run.stderr[-3000:]
    # QA 107 #2: `pip install --target DIR` puts them in DIR/share/capsule-triage, where nothing looked
    target = tmp_path / "target"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    bare = tmp_path / "bare"  # an environment of its own, without the wheel's share/ (the first one has it)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=120)
    bare_site = subprocess.run([bare / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip()
    (Path(bare_site) / "outer.pth").write_text(sysconfig.get_path("purelib") + "\n")
    run = subprocess.run([bare / "bin" / "python", "-m", "capsule_triage", "run", str(DEMO_CLIP), "--out", "o3", "--quiet"],
                         cwd=work, env={**env, "PYTHONPATH": str(target)}, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    record = json.loads((work / "o3" / "run.json").read_text())
    assert record["pipeline"]["source"] == str(target / "share" / "capsule-triage" / "pipelines" / "capsule-bleeding.toml")


def test_run_json_names_the_commit_of_the_checkout_that_ran(tmp_path, monkeypatch):
    """QA 24: run.json said 'capsule-triage 0.1.0' whatever code ran; from a git checkout (a branch, a worktree,
    packed refs, a detached HEAD) it names the commit, read from .git without running git; a wheel has none."""
    import subprocess

    from capsule_triage.versions import checkout_commit

    def git(*args, cwd=tmp_path / "repo"):
        return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()

    (tmp_path / "repo").mkdir()
    git("init", "-q", "-b", "main")
    (tmp_path / "repo" / "a.txt").write_text("a")
    git("add", "a.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    head = git("rev-parse", "HEAD")
    assert checkout_commit(tmp_path / "repo") == head
    git("worktree", "add", "-q", str(tmp_path / "wt"), "-b", "other")
    assert checkout_commit(tmp_path / "wt") == head
    git("pack-refs", "--all")
    assert not (tmp_path / "repo" / ".git" / "refs" / "heads" / "main").exists() and checkout_commit(tmp_path / "repo") == head
    git("checkout", "-q", "--detach")
    assert checkout_commit(tmp_path / "repo") == head
    assert checkout_commit(tmp_path) is None  # not a checkout (an installed wheel's site-packages)
    # review rev22: a submodule's .git file names its gitdir relative to the checkout, not to the working folder
    git("-c", "protocol.file.allow=always", "submodule", "add", "-q", str(tmp_path / "wt"), "sub")
    monkeypatch.chdir("/")
    assert (tmp_path / "repo" / "sub" / ".git").is_file() and checkout_commit(tmp_path / "repo" / "sub") == head
    (tmp_path / "repo" / ".git" / "HEAD").write_text("garbage\n")  # what is not a commit is not recorded as one
    assert checkout_commit(tmp_path / "repo") is None


def test_a_video_whose_picture_size_changes_part_way_is_said(tmp_path, random_weights):
    """QA 87 #4: a stream that changes its picture size part-way (recordings joined, a recorder restarted) was triaged
    without a word, run.json's source giving the first frames' size alone; said as a frame folder's sizes are, in a
    decoder process as in the run's own. A video of one size records its frames' size and says nothing."""
    import cv2

    frames = _demo_frames(8)
    small = [cv2.resize(frame, (frame.shape[1] // 2, frame.shape[0] // 2)) for frame in frames[4:]]
    parts = [encode_clip(frames[:4], tmp_path / "a.ts", pts=list(range(4)), time_base=(1, 4)),
             encode_clip(small, tmp_path / "b.ts", pts=list(range(4, 8)), time_base=(1, 4))]
    joined = tmp_path / "joined.ts"
    joined.write_bytes(b"".join(part.read_bytes() for part in parts))
    first, other = (f"{frames[0].shape[1]}x{frames[0].shape[0]}", f"{small[0].shape[1]}x{small[0].shape[0]}")
    for where in ("thread", "process"):
        done = triage("run", joined, "--weights", random_weights, "--out", tmp_path / where, "--quiet", "--decode-in", where)
        assert done.returncode == 0, done.stderr
        lines = done.stderr.splitlines()
        assert lines[0] == (f"Warning: {joined}: frames of 2 sizes ({first} px: 4, {other} px: 4; run.json image_sizes): the "
                            "stream changes its picture size part-way (a recorder restarted, recordings joined?); each frame is "
                            "scaled to the model's input on its own; the study's width and height are its first frame's")
        # the two recordings' times overlap as FFmpeg reads the joined stream (QA 110 #2's note says so), nothing else
        assert len(lines) == 2 and lines[1].startswith(f"Warning: {joined}: 1 frame timed before the frame decoded ahead of it"), lines
        assert json.loads((tmp_path / where / "run.json").read_text())["image_sizes"] == {first: 4, other: 4}
    assert triage("run", parts[0], "--weights", random_weights, "--out", tmp_path / "one", "--quiet").stderr == ""
    assert json.loads((tmp_path / "one" / "run.json").read_text())["image_sizes"] == {first: 4}


def test_a_frame_folder_of_images_of_several_sizes_is_said(tmp_path, random_weights):
    """QA 77 #11: a folder mixing sizes (another device's frames, enlarged stills) was read without a word, run.json's source
    giving the first image's size alone; in a decoder process as in the run's own (the stats come back from the child)."""
    import cv2

    frames = _demo_frames(6)
    frames[3:] = [cv2.resize(frame, (frame.shape[1] * 2, frame.shape[0] * 3 // 2)) for frame in frames[3:5]] + [frames[5]]
    folder = write_frame_folder(frames, tmp_path / "mixed")
    first, other = (f"{frames[0].shape[1]}x{frames[0].shape[0]}", f"{frames[3].shape[1]}x{frames[3].shape[0]}")
    for where in ("thread", "process"):
        done = triage("run", folder, "--weights", random_weights, "--out", tmp_path / where, "--quiet", "--fps", "2",
                      "--decode-in", where)
        assert done.returncode == 0, done.stderr
        assert done.stderr == (f"Warning: {folder}: images of 2 sizes ({first} px: 4, {other} px: 2; run.json image_sizes): several "
                               "devices, or enlarged stills, in one folder? Each is scaled to the model's input on its own (short "
                               "side, centre square); the study's width and height are its first image's\n"), done.stderr
        run = json.loads((tmp_path / where / "run.json").read_text())
        assert run["image_sizes"] == {first: 4, other: 2} and run["decoded_in"] == where
    uniform = write_frame_folder(frames[:3], tmp_path / "uniform")
    assert triage("run", uniform, "--weights", random_weights, "--out", tmp_path / "u", "--quiet", "--fps", "2").stderr == ""
    assert json.loads((tmp_path / "u" / "run.json").read_text())["image_sizes"] == {first: 3}
    assert json.loads((tmp_path / "thread" / "run.json").read_text())["source"]["width"] == frames[0].shape[1]


def test_a_checkout_is_a_source_tree_of_this_project_holding_presets(tmp_path):
    """QA 107 #1, rev98 #9, rev99 #6: site-packages holding another package's `pipelines` hid an installed wheel's presets;
    a folder counts as the checkout around the package only when its pipelines/ holds presets and its pyproject.toml, if
    it has one, names capsule-triage (a copy of the tree's folders without it still counts)."""
    from capsule_triage.presets import _is_checkout

    for name, pyproject, presets, expected in (("stray", None, False, False), ("other", "other-project", True, False),
                                               ("copy", None, True, True), ("ours", "capsule-triage", True, True)):
        folder = tmp_path / name
        (folder / "pipelines").mkdir(parents=True)
        (folder / "pipelines" / "__init__.py").write_text("")
        if presets:
            (folder / "pipelines" / "p.toml").write_text("name = 'p'\n")
        if pyproject:
            (folder / "pyproject.toml").write_text(f"[project]\nname = '{pyproject}'\n")
        assert _is_checkout(folder) is expected, name
