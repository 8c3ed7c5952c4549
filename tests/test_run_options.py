"""The library refuses what the CLI refuses (QA pass 13): RunOptions out of range or of the wrong
type, folder options for a video and a classifier of another pipeline are named before any work;
they used to reach the decoder as numpy errors or run.json as the wrong value."""

from __future__ import annotations

import re
import shutil

import pytest

from capsule_triage import RunOptions, load_classifier, load_pipeline, triage_study
from capsule_triage.errors import WeightsError
from conftest import DEMO_CLIP


@pytest.fixture(scope="module")
def bleeding(random_weights):
    pipeline = load_pipeline("capsule-bleeding")
    return pipeline, load_classifier(pipeline, weights=random_weights, device="cpu", backend="torch-fp32")  # a Path, as well as a str


@pytest.mark.parametrize("options, message", [
    (dict(batch_size=-4), "batch_size (--batch-size) must be a whole number from 1 to 1024, got -4"),
    (dict(batch_size=2.5), "batch_size (--batch-size) must be a whole number from 1 to 1024, got 2.5"),
    (dict(batch_size="8"), "batch_size (--batch-size) must be a whole number from 1 to 1024, got '8'"),
    (dict(batch_size=0), "batch_size (--batch-size) must be a whole number from 1 to 1024, got 0"),
    (dict(batch_size=100_000), "batch_size (--batch-size) must be a whole number from 1 to 1024, got 100000"),  # QA 91 #2: every frame in memory
    (dict(threshold="0.3"), "threshold (--threshold) must be a number in [0, 1], got '0.3'"),
    (dict(threshold=float("nan")), "threshold (--threshold) must be a number in [0, 1], got nan"),
    (dict(top_k=-1), "top_k (--top-k) must be a whole number >= 0, got -1"),
    (dict(folder_fps=0), "folder_fps (--fps) must be a finite number >= 0.001, got 0"),
    (dict(folder_fps=1e-6), "folder_fps (--fps) must be a finite number >= 0.001, got 1e-06"),  # QA 97 #4: as the CLI's bound
    (dict(folder_fps=float("inf")), "folder_fps (--fps) must be a finite number >= 0.001, got inf"),
    (dict(skip_duplicates=300), "skip_duplicates (--skip-duplicates) must be a mean grey-level difference in [0, 255], got 300"),
    (dict(decoder_processes=0), "decoder_processes (--decoders) must be a whole number >= 1, got 0"),
    (dict(decode_in="gpu"), "decode_in (--decode-in) must be one of auto, process, thread, got 'gpu'"),
    (dict(decoder_processes=2, decode_in="thread"), "--decoders 2 decodes in 2 processes: --decode-in thread contradicts it (omit one)"),
    (dict(queue_depth=True), "queue_depth must be a whole number >= 1, got True"),
    (dict(own_timestamps="no"), "own_timestamps must be True or False, got 'no'"),  # review rev32: any value was taken
    (dict(force="no"), "force must be True or False, got 'no'"),  # QA 68 #5: replaced an earlier output
    (dict(report="no"), "report must be True or False, got 'no'"),
    (dict(progress=1), "progress must be True or False, got 1"),
    (dict(timestamps_csv=5), "timestamps_csv must be a path (str or pathlib.Path) or None, got 5"),
    (dict(timestamps_csv=""), "timestamps_csv must be a path (str or pathlib.Path) or None, got ''"),  # QA 116 #2: as None
    (dict(command=5), "command must be a string or None, got 5"),  # was recorded in run.json as 5
])
def test_options_out_of_range_or_of_the_wrong_type_are_refused_before_any_work(bleeding, tmp_path, options, message):
    pipeline, classifier = bleeding
    out = tmp_path / "out"
    with pytest.raises(ValueError) as error:
        triage_study(DEMO_CLIP, pipeline, classifier, RunOptions(out=out, **options))
    assert str(error.value) == message and not out.exists() and list(tmp_path.iterdir()) == []


def test_paths_and_thresholds_of_the_wrong_kind_are_refused_before_any_work(bleeding, tmp_path, random_weights):
    """QA 68 #1, #4: a path given as a number was pathlib's TypeError (RunOptions.out after the probe); load_classifier's
    threshold=5 for a loose weights file failed the run after every frame had been scored."""
    pipeline, classifier = bleeding
    with pytest.raises(ValueError, match=r"^input_path must be a path \(str or pathlib.Path\), got int$"):
        triage_study(5, pipeline, classifier, RunOptions(out=tmp_path / "out"))
    with pytest.raises(ValueError, match=r"^out must be a path \(str or pathlib.Path\) or None, got 5$"):
        triage_study(DEMO_CLIP, pipeline, classifier, RunOptions(out=5))
    with pytest.raises(ValueError, match=r"^out must be a path \(str or pathlib.Path\) or None, got ''$"):  # QA 116 #2: the
        triage_study(DEMO_CLIP, pipeline, classifier, RunOptions(out="", force=True))  # default beside the input, replaced
    from dataclasses import replace

    for size in (0, -5, 5000, 2.5):  # QA 116 #3: a preset's read batch set in code ran 0 and -5 as 2, 5000 as 5000
        with pytest.raises(ValueError, match=rf"^the preset's \[reader\] batch_size must be a whole number from 1 to 1024, got {size}$"):
            triage_study(DEMO_CLIP, replace(pipeline, read=replace(pipeline.read, batch_size=size)), classifier,
                         RunOptions(out=tmp_path / "out"))
    assert list(tmp_path.iterdir()) == []  # rev104 #7: unless --batch-size replaces it
    triage_study(DEMO_CLIP, replace(pipeline, read=replace(pipeline.read, batch_size=0)), classifier,
                 RunOptions(out=tmp_path / "override", batch_size=8, report=False))
    assert (tmp_path / "override" / "frames.parquet").is_file()
    shutil.rmtree(tmp_path / "override")
    from capsule_triage import probe, read_frames

    for read in (probe, read_frames):
        with pytest.raises(ValueError, match=r"^path must be a path \(str or pathlib.Path\), got int$"):
            read(5)
    for threshold in (5, -1, float("nan"), "abc", True):
        with pytest.raises(ValueError, match=rf"^threshold must be a number in \[0, 1\], got {re.escape(repr(threshold))}$"):
            load_classifier(pipeline, weights=random_weights / "model.safetensors", device="cpu", threshold=threshold)
    assert list(tmp_path.iterdir()) == []


def test_a_classifier_of_another_pipeline_is_refused_and_numpy_numbers_and_folder_options_on_a_video_are_taken(bleeding, tmp_path):
    """Review: one RunOptions serves every study of a batch, so folder options on a video are ignored
    there (triage run refuses them before loading the model); numpy scalars (a threshold from an
    evaluation's scores) are numbers and are recorded as plain ones."""
    import numpy as np

    pipeline, classifier = bleeding
    with pytest.raises(WeightsError, match=r"weights classes \['non-bleeding', 'bleeding'\] do not match the preset's \['GC', 'GU', 'CG'\] "
                                           r"\(gastric-3class-resnet50\); load the classifier for this pipeline"):
        triage_study(DEMO_CLIP, load_pipeline("gastric-3class-resnet50"), classifier, RunOptions(out=tmp_path / "out"))
    with pytest.raises(ValueError, match="^skipping duplicates compares frames in time order: use one decoder process with it$"):
        triage_study(DEMO_CLIP, pipeline, classifier, RunOptions(out=tmp_path / "out", skip_duplicates=2.0, decoder_processes=2))
    with pytest.raises(ValueError, match=r"^folder_fps \(--fps\) and timestamps_csv \(--timestamps\): give one, not both"):  # QA 124 #4
        triage_study(DEMO_CLIP, pipeline, classifier, RunOptions(out=tmp_path / "out", folder_fps=7.0, timestamps_csv=tmp_path / "t.csv"))
    assert list(tmp_path.iterdir()) == []
    result = triage_study(DEMO_CLIP, pipeline, classifier, RunOptions(out=tmp_path / "out", batch_size=np.int64(8), top_k=np.int64(0),
                                                                      report=np.False_,  # rev64: a numpy bool is a flag
                                                                      threshold=np.float32(0.4), folder_fps=7.0))
    read, rank = result.run["parameters"]["read"], result.run["parameters"]["rank"]
    assert read["batch_size"] == 8 and type(read["batch_size"]) is int and result.frames == 64
    assert rank["enter_threshold"] == pytest.approx(0.4) and type(rank["enter_threshold"]) is float
    assert not (tmp_path / "out" / "report.html").exists()


def test_library_use_leaves_no_progress_thread_and_says_the_threads_torch_ran_on(bleeding, tmp_path, random_weights):
    """QA 32: a run with progress=False left tqdm's monitor thread running in the user's process (tqdm starts it even
    for a disabled bar); run.json said threads "default (one per core)" while a classifier loaded with threads=1
    had set torch's process-wide count to 1; options given as a dict failed deep inside ('dict' has no 'batch_size')."""
    import subprocess
    import sys

    import torch

    script = ("import threading, sys\n"
              "from capsule_triage import RunOptions, load_classifier, load_pipeline, triage_study\n"
              "p = load_pipeline('capsule-bleeding')\n"
              f"c = load_classifier(p, weights={str(random_weights)!r}, device='cpu', backend='torch-fp32')\n"
              f"triage_study({str(DEMO_CLIP)!r}, p, c, RunOptions(out={str(tmp_path / 'o')!r}, progress=False))\n"
              "from capsule_triage.batch import BatchOptions, run_batch\n"  # review rev30: the batch's bar too
              f"run_batch({str(DEMO_CLIP.parent)!r}, {str(tmp_path / 'b')!r}, BatchOptions(weights={str(random_weights)!r}, progress=False))\n"
              "print(sorted(t.name for t in threading.enumerate()))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "tqdm_monitor" not in done.stdout and "MainThread" in done.stdout
    pipeline, _ = bleeding
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        one = load_classifier(pipeline, weights=random_weights, device="cpu", backend="torch-fp32", threads=1)
        other = load_classifier(pipeline, weights=random_weights, device="cpu", backend="torch-fp32")
        assert one.describe()["threads"] == other.describe()["threads"] == torch.get_num_threads() == 1  # said as it is
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="^options must be a RunOptions, got dict$"):
        triage_study(DEMO_CLIP, pipeline, other, {"out": tmp_path / "x"})
    import capsule_triage

    assert capsule_triage.RunOptions is RunOptions and len(dir(capsule_triage)) == len(set(dir(capsule_triage)))  # QA 32: listed twice


def test_reading_a_batchs_tables_or_a_star_import_loads_no_model_code():
    """QA 78 #1: `from capsule_triage import *` and `capsule_triage.batch_table` loaded PyTorch and timm (+670 MB, 2.4 s)
    through capsule_triage.batch's eager imports of its engine and worker."""
    import subprocess
    import sys

    probe = ("import sys, capsule_triage\ncapsule_triage.batch_table\nfrom capsule_triage import *\n"
             "print(sorted(m for m in ('torch', 'timm', 'capsule_triage.batch.engine', 'capsule_triage.batch.worker') if m in sys.modules))\n"
             "from capsule_triage.batch import run_batch, StudyWorker, study_id\nprint(run_batch.__module__, study_id.__module__)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[]", "capsule_triage.batch.engine capsule_triage.batch.discovery"], done.stdout
