"""Which backend scores a weights folder, and why: ``triage optimize``'s report (``backends.json``)
read defensively, and the choice recorded in run.json.

A report is used only when it was made for these exact weights and is well formed; a hand-edited or
damaged one is set aside with a warning, never a traceback. An explicit ``--backend`` that the report
rejected still runs (the user asked for it) but says so, and an ONNX backend whose file was provably
exported from other network weights is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from datetime import datetime, timezone
from pathlib import Path

from .json_files import read_json
from .backends import BACKENDS, engine_error, onnx_file, runs_here
from .cpu_info import machine as cpu_machine
from .cpu_info import LOADED_SHARE, bf16_emulated, numerics
from .device import bf16_unsupported, gpu_name
from .digests import file_sha256
from .errors import WeightsError
from .model_config import CONFIG_NAME, WEIGHTS_NAME, ModelConfig

BACKENDS_FILE = "backends.json"  # written by `triage optimize` beside config.json


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def report_problem(report) -> str | None:
    """What makes a parsed report unusable (None when it is well formed)."""
    if not isinstance(report, dict) or not isinstance(report.get("candidates"), dict):
        return "not a report of `triage optimize` (no candidates object)"
    digests = report.get("onnx_sha256", {})
    if not isinstance(digests, dict) or not all(isinstance(v, str) and len(v) == 64 for v in digests.values()):
        return "onnx_sha256 must map ONNX file names to SHA-256 digests"
    for name, row in report["candidates"].items():
        if name not in BACKENDS:
            return f"unknown backend {name!r}"
        if not isinstance(row, dict) or not isinstance(row.get("accepted"), bool):
            return f"{name}: no accepted true/false"
        for key in ("reason", "error", "skipped"):  # rev54: a number or an object there was a TypeError traceback in run
            if key in row and not isinstance(row[key], str):
                return f"{name}: {key} must be text, got {type(row[key]).__name__}"
        if not row["accepted"]:
            continue
        fps = row.get("frames_per_second")
        if not _number(fps) or fps <= 0:
            return f"{name}: frames_per_second must be a positive number, got {fps!r}"
        tuning = row.get("tuning", {})
        if not isinstance(tuning, dict) or not all(_positive_int(tuning.get(k, 1)) for k in ("batch_size", "threads", "streams")):
            return f"{name}: tuning needs integers >= 1 (batch_size, threads, streams), got {tuning!r}"
        diff, tolerance = row.get("max_score_diff"), report.get("tolerance")  # QA 67 #2: accepted against its own check, unsaid
        if _number(diff) and _number(tolerance) and diff > tolerance:
            return f"{name}: accepted, though its max_score_diff {diff:g} exceeds the report's tolerance {tolerance:g}"
        if row.get("events_identical") is False:
            return f"{name}: accepted, though its events differ from fp32's (events_identical false)"
    return None


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse_report(weights_dir: Path | None) -> tuple[dict | None, str | None]:
    """The well-formed report in ``weights_dir`` whoever it was made for, else None and why."""
    if weights_dir is None or not (weights_dir / BACKENDS_FILE).exists():
        return None, f"no {BACKENDS_FILE} from `triage optimize` for these weights"
    path = weights_dir / BACKENDS_FILE
    try:
        report = read_json(path)
    except (OSError, ValueError) as exc:
        return None, f"{path} is unreadable ({str(exc).splitlines()[0][:120]}); run `triage optimize` again"
    problem = report_problem(report)
    if problem:
        return None, f"{path} is malformed ({problem}); run `triage optimize` again"
    return report, None


def _for_these_weights(parsed: tuple[dict | None, str | None], weights_dir: Path | None, weights_id: str) -> tuple[dict | None, str | None]:
    report, problem = parsed
    if report is not None and report.get("weights_sha256") != weights_id:
        return None, f"{weights_dir / BACKENDS_FILE} was made for other weights or another config.json; run `triage optimize` again"
    return report, problem


def read_backend_report(weights_dir: Path | None, weights_id: str) -> tuple[dict | None, str | None]:
    """``triage optimize``'s report if it is usable for these exact weights, else None and why."""
    return _for_these_weights(_parse_report(weights_dir), weights_dir, weights_id)


GRAPH_FIELDS = ("input_size", "mean", "std", "interpolation", "border", "border_radius")  # folded into an exported graph


def graph_sha256(config: ModelConfig) -> str:
    """SHA-256 of the config fields an exported ONNX graph has built in (its preprocessing)."""
    data = config.to_dict()
    return hashlib.sha256(json.dumps({k: data[k] for k in GRAPH_FIELDS}, sort_keys=True).encode()).hexdigest()


def _stale_onnx(weights_dir: Path, backend: str, parsed: dict | None, model_sha256: str | None) -> tuple[bool, str | None]:
    """Whether the ONNX file of ``backend`` was provably exported from other network weights or
    preprocessing (the report ``parsed`` records both as they were at the export), and a warning when
    no report says. ``model_sha256``: the current model.safetensors digest, if the caller has it."""
    recorded = parsed.get("model_sha256") if parsed else None
    if not recorded:
        return False, (f"{onnx_file(backend)} may not be the export of these weights (no {BACKENDS_FILE} vouches for it); "
                       "run `triage optimize` again")
    graph = parsed.get("graph_sha256")
    if recorded != (model_sha256 or file_sha256(weights_dir / WEIGHTS_NAME)) or (graph and graph != graph_sha256(ModelConfig.load(weights_dir / CONFIG_NAME))):
        return True, None
    return False, None  # same network and preprocessing: only e.g. the threshold changed, the graph still holds


def _disagreement(candidate: dict, tolerance) -> str:
    diff = candidate.get("max_score_diff")
    parts = [f"max score difference {diff:.3f}" + (f" > tolerance {tolerance}" if tolerance is not None else "")] if isinstance(diff, (int, float)) else []
    parts += ["events differ"] if candidate.get("events_identical") is False else []
    return ", ".join(parts) or "scores differ from fp32"


EVENT_SETTINGS = ("smooth_seconds", "enter_threshold", "leave_threshold", "merge_gap_seconds", "min_event_seconds")


def _other_events(checked: dict | None, rank_params: dict | None) -> str | None:
    """How the run's event settings differ from ``checked``, those the agreement check found identical
    events with (a lower precision that agreed at the model's threshold may split an event at another;
    QA 20), or None."""
    if not isinstance(checked, dict) or not rank_params:
        return None
    differ = [f"{k} {rank_params[k]:g} (checked {checked[k]:g})" for k in EVENT_SETTINGS
              if isinstance(checked.get(k), (int, float)) and isinstance(rank_params.get(k), (int, float))
              and not math.isclose(checked[k], rank_params[k], rel_tol=1e-6, abs_tol=1e-9)]
    return ", ".join(differ) or None


def events_unchecked(selection: dict, rank_params: dict) -> str | None:
    """A warning when a lower precision was chosen for other event settings than this run's (a classifier
    loaded without the run's ``--threshold``: the library's ``load_classifier(pipeline)``), else None."""
    other = _other_events(selection.get("events_checked"), rank_params)
    return f"{selection.get('backend')} was checked for other event settings ({other}); its events may differ from fp32's" if other else None


def _other_events_warning(backends: str, other: str) -> str:
    return (f"this run's event settings differ from those {BACKENDS_FILE} checked {backends} with ({other}); fp32 runs "
            "(run `triage optimize` with these settings to check the faster ones for them)")


# QA 60 #1: ov-bf16 refuses such a CPU; PyTorch runs bf16 there in emulation (measured on an AVX2-only EPYC, demo clip:
# 2.6 frames/s against ov-fp32's 87.7), and a user asks for bf16 to be faster
EMULATED_BF16 = ("this CPU has no native bf16 (AVX-512-BF16 or AMX): PyTorch emulates bf16, many times slower than fp32 "
                 "here; use an fp32 backend")

NUMERICS = {"native_bf16": "native bf16 (AVX-512-BF16 or AMX)", "int8_dot_product": "int8 dot products (VNNI or AMX)"}


# what a lower precision's arithmetic depends on (rev37: a difference in int8 blocked torch-bf16 too)
NUMERICS_OF = {"torch-bf16": ("native_bf16",), "ov-bf16": ("native_bf16",), "ort-int8": ("int8_dot_product",),
               "ov-int8": ("native_bf16", "int8_dot_product")}  # OpenVINO's int8 runs its float layers in bf16 where native


def _other_numerics(machine, backends) -> str | None:
    """Where the CPU a report was measured on computes ``backends`` (lower precisions) otherwise than this one, or
    does not record how, as "a CPU that computes it otherwise (...)"; None when it computes them alike: their
    agreement checks then hold here too."""
    machine = machine if isinstance(machine, dict) else {}
    theirs = {"native_bf16": machine.get("native_bf16", machine.get("openvino_native_bf16")),  # older reports: OpenVINO's word
              "int8_dot_product": machine.get("int8_dot_product")}
    here = numerics()
    keys = [k for k in NUMERICS if any(k in NUMERICS_OF.get(b, ()) for b in backends) and theirs[k] is not here[k]]
    if not keys:
        return None
    said = lambda value: "not recorded" if not isinstance(value, bool) else "yes" if value else "no"
    known = any(isinstance(theirs[k], bool) for k in keys)
    lead = f"that computes {'them' if len(backends) > 1 else 'it'} otherwise" if known else "whose arithmetic is not recorded"
    return f"a CPU {lead} (" + "; ".join(f"{NUMERICS[k]}: {said(theirs[k])} there, {said(here[k])} here" for k in keys) + ")"


def _within_cpus(tuning: dict) -> tuple[dict, str | None]:
    """``tuning`` with its streams x threads within this machine's CPUs, and a warning when they were cut (QA 91 #1: a
    report from a 64-core machine ran 64 threads on 2 cores, 57x slower, said only by run.json's reason)."""
    cpus, streams, threads = max(1, cpu_machine()["cpus"] or 1), tuning.get("streams", 1), tuning.get("threads", 1)
    if streams * threads <= cpus:
        return tuning, None
    fitted = {**tuning, "streams": min(streams, cpus), "threads": max(1, cpus // min(streams, cpus))}
    return fitted, (f"{BACKENDS_FILE} runs {streams} stream(s) of {threads} thread(s), more than this machine's {cpus} CPU(s): "
                    f"{fitted['streams']} stream(s) of {fitted['threads']} thread(s) run here (`triage optimize` on this machine "
                    "measures its own)")


def _measured_on(report: dict) -> str:
    """Where a report's speeds were measured, when that is not this machine: another CPU model, core count or
    features (rev37: two machines may share the generic name "Intel(R) Xeon(R) Processor"); "" when it is this one."""
    machine = report.get("machine") if isinstance(report.get("machine"), dict) else {}
    if "native_bf16" not in machine or not isinstance(machine.get("processor"), str):  # older reports name the architecture only
        return ", measured on a CPU it does not name"
    here = cpu_machine()
    if all(machine.get(k) == here[k] for k in ("processor", "cpus", "cpu_features")):
        return ""
    features = machine.get("cpu_features")
    features = ", ".join(map(str, features)) if isinstance(features, list) and features else "none of the listed features"
    return f", measured on {machine['processor']} with {machine.get('cpus', '?')} CPU(s) and {features}, not this machine"


def _timed(report: dict, chosen: str, rivals: list[str]) -> str:
    """When a report's figures were timed, and which of the accepted backends that run here (``chosen``, then the slower
    ``rivals``) were timed while other processes took CPUs (QA 102 #1, #3: on the machine that timed it, a figure of
    another day, 185 frames/s where 210 ran, or one timed under load, was quoted as this machine's now; rev95 #2: a rival
    timed under load may be the faster one). Fields out of shape (a hand-edited report) are left unsaid."""
    said = ""
    with contextlib.suppress(TypeError, ValueError):  # ISO 8601, as bench.json's measured_at
        at = datetime.fromisoformat(report.get("measured_at"))
        said = f", timed {(at if at.tzinfo is None else at.astimezone(timezone.utc)).strftime('%Y-%m-%d %H:%M UTC')}"
    machine = report.get("machine") if isinstance(report.get("machine"), dict) else {}
    cpus = machine.get("cpus")
    if not (isinstance(cpus, int) and not isinstance(cpus, bool) and cpus > 0):
        return said
    load = {}
    for name in (chosen, *rivals):
        others = report["candidates"].get(name, {}).get("other_processes_cpus")
        if isinstance(others, (int, float)) and not isinstance(others, bool) and math.isfinite(others) and others > LOADED_SHARE * cpus:
            load[name] = others
    if chosen in load:
        said += f"; other processes used {load[chosen]:.2f} of its {cpus} CPUs while it was timed: its figure is likely low"
    if lost := [name for name in rivals if name in load]:
        said += (f"; {', '.join(lost)}, timed while other processes used up to {max(load[n] for n in lost):.2f} of its {cpus} "
                 f"CPUs, may be faster")
    return said + ("; run `triage optimize` again on an idle machine" if load else "")


def _fastest_usable(accepted: dict) -> str | None:
    """The fastest of ``accepted`` backends that runs here, its engine importing (the one a warning says was given up)."""
    return next((k for k in sorted(accepted, key=lambda k: -accepted[k]["frames_per_second"]) if runs_here(k) and not engine_error(k)), None)


def choose_backend(requested: str, device: str, weights_dir: Path | None, weights_id: str, *, model_sha256: str | None = None,
                   rank_params: dict | None = None, threads: int | None = None) -> dict:
    """Pick the backend and say why (recorded in run.json; ``warnings`` are printed too).

    ``auto``: on CUDA, torch fp16 autocast if ``triage optimize`` on a GPU accepted it, else fp32; on
    CPU, the fastest backend that ``triage optimize``
    measured on real frames *and* accepted (scores within tolerance of fp32, identical events, on a
    demanding enough check) and whose engine is installed; torch fp32 when no usable report exists.
    ``model_sha256``: the digest of the folder's model.safetensors if the caller computed it already.
    ``rank_params``: the run's event settings; where they differ from those of the check, ``auto``
    takes only fp32 backends (the check's "identical events" held for its settings), with a warning.
    ``threads``: the caller's inference threads, which replace the measured layout (None: an ONNX backend's measured
    streams x threads, cut to this machine's CPUs).
    """
    explicit = requested != "auto"
    if requested != "auto" and requested not in BACKENDS:
        raise ValueError(f"--backend must be auto or one of {', '.join(BACKENDS)}, got {requested!r}")
    parsed = _parse_report(weights_dir)
    report, why_not = _for_these_weights(parsed, weights_dir, weights_id)
    warnings = [why_not] if why_not and weights_dir is not None and (weights_dir / BACKENDS_FILE).exists() else []
    if report and any("crop runs in PyTorch" in str(c.get("error")) for c in report.get("candidates", {}).values()):
        warnings.append(f"{BACKENDS_FILE} was written before models that detect the field of view could run on ONNX Runtime and "
                        "OpenVINO (2026-12-01), and its lower precisions were checked against the crop before it was rounded to "
                        "uint8: run `triage optimize` again (QA 27)")
    if report and device.startswith("cuda"):  # CPU measurements say nothing of a GPU: only what optimize checked on this one
        report = {**report, "candidates": {k: v for k, v in report["candidates"].items() if v.get("gpu") and v["gpu"] == gpu_name(device)}}
    # QA 42: a report from a CPU that computes bf16 or int8 otherwise vouches for no lower precision here
    on_cpu = bool(report) and not device.startswith("cuda")
    if requested == "auto" and device.startswith("cuda"):  # fp16 only once `triage optimize` on this GPU accepted it
        accepted = (report or {}).get("candidates", {}).get("torch-fp16", {}).get("accepted")
        if accepted and (other := _other_events(report.get("rank_params"), rank_params)):
            accepted = False
            warnings.append(_other_events_warning("torch-fp16", other))
        requested, reason = ("torch-fp16", f"CUDA device: fp16 autocast, accepted in {BACKENDS_FILE}") if accepted else \
            ("torch-fp32", f"CUDA device: fp32 (fp16 is chosen once `triage optimize` on this GPU accepted it in {BACKENDS_FILE})")
    elif requested == "auto":
        accepted = {k: v for k, v in (report or {}).get("candidates", {}).items() if v["accepted"] and not k.endswith("fp16")}
        other = _other_events((report or {}).get("rank_params"), rank_params)
        if other and any(not k.endswith("fp32") for k in accepted):
            lower = sorted(k for k in accepted if not k.endswith("fp32"))
            would_win = _fastest_usable(accepted)
            accepted = {k: v for k, v in accepted.items() if k.endswith("fp32")}
            if would_win in lower:  # QA 30: said also when an fp32 backend was the fastest anyway (nothing given up)
                warnings.append(_other_events_warning(", ".join(lower), other))
        blocked = sorted(k for k in accepted if on_cpu and _other_numerics(report.get("machine"), [k]))
        if blocked:
            would_win = _fastest_usable(accepted)
            accepted = {k: v for k, v in accepted.items() if k not in blocked}
            if would_win in blocked:
                warnings.append(f"{BACKENDS_FILE} checked {', '.join(blocked)} on {_other_numerics(report.get('machine'), blocked)}: "
                                f"{'their' if len(blocked) > 1 else 'its'} agreement with fp32 does not carry over; "
                                f"{'an fp32 backend' if all(k.endswith('fp32') for k in accepted) else 'another'} runs "
                                "(run `triage optimize` on this machine)")
        fastest_first = sorted(accepted, key=lambda k: -accepted[k]["frames_per_second"])
        runnable = [k for k in fastest_first if runs_here(k)]
        missing = [k for k in runnable if onnx_file(k) and not (weights_dir / onnx_file(k)).is_file()]  # QA 27: copied without them
        if missing:
            warnings.append(f"{BACKENDS_FILE} accepts {', '.join(missing)}, but {weights_dir} lacks "
                            f"{', '.join(sorted({onnx_file(k) for k in missing}))}: left out (copy the .onnx files with the weights, "
                            "or run `triage optimize`)")
            runnable = [k for k in runnable if k not in missing]
        broken = []  # QA 107 #4: an engine installed but failing on import stopped the run; auto takes the next one
        while runnable and (error := engine_error(runnable[0])):
            broken.append((runnable.pop(0), error))
        takes = f"the run takes {runnable[0]}" if runnable else "torch-fp32 runs"  # QA 113 #6: not one left out next
        warnings += [f"{name} left out: its engine fails to load, {error}; reinstall it ({takes})" for name, error in broken]
        broken = [name for name, _ in broken]
        if not runnable:
            reason = why_not or f"no accepted backend in {BACKENDS_FILE} runs here"
            return {"backend": "torch-fp32", "reason": reason, **({"warnings": warnings} if warnings else {})}
        requested, reason = runnable[0], (f"fastest accepted in {BACKENDS_FILE} ({accepted[runnable[0]]['frames_per_second']:.0f} "
                                          f"frames/s{_measured_on(report)}{_timed(report, runnable[0], runnable[1:])})")  # QA 42: another
        # machine's figure read as this one's; QA 102: another day's, or one timed under load
        if runnable[0] != fastest_first[0]:  # QA 91 #6: a faster one left out for its missing file was put down to the machine
            faster = fastest_first[:fastest_first.index(runnable[0])]
            lacking = sorted({onnx_file(k) for k in faster if k in missing})
            why = [*(["an engine or a CPU feature this machine lacks"] if any(k not in missing + broken for k in faster) else []),
                   *(["an engine that imports"] if any(k in broken for k in faster) else []),
                   *([f"{', '.join(lacking)}, not in {weights_dir}"] if lacking else [])]
            reason += f" that runs here (faster ones need {' or '.join(why)})"
    else:
        reason = "requested with --backend"
    choice = {"backend": requested, "reason": reason}
    if report and requested in report["candidates"]:
        candidate = report["candidates"][requested]
        choice["agreement"] = {k: candidate[k] for k in ("max_score_diff", "events_identical", "accepted", "reason", "skipped") if k in candidate}
        choice["agreement"].update({k: report[k] for k in ("check_frames", "check_frames_uncertain", "tolerance") if k in report})
        if candidate.get("skipped") and not candidate["accepted"]:  # QA 60 #7: not a candidate on the CPU it was measured on
            here = ("; this CPU has native bf16: `triage optimize` on it checks it" if requested.endswith("bf16") and on_cpu
                    and numerics()["native_bf16"] else "")
            warnings.append(f"{requested} was not checked in {BACKENDS_FILE}{_measured_on(report)} ({candidate['skipped']}{here}); "
                            "its scores may differ from fp32")
        elif not candidate["accepted"] and requested != "torch-fp32":  # the reference itself is never rejected
            why = candidate.get("reason") or candidate.get("error") or _disagreement(candidate, report.get("tolerance"))
            if on_cpu and (other := _other_numerics(report.get("machine"), [requested])):  # QA 60: its figure read as this CPU's
                why += f", measured on {other}: not this CPU's figure"
            warnings.append(f"{requested} was rejected by the agreement check in {BACKENDS_FILE} ({why}); its scores may differ from fp32")
        elif explicit and on_cpu and (other := _other_numerics(report.get("machine"), [requested])):
            warnings.append(f"{requested} was checked against fp32 in {BACKENDS_FILE} on {other}; "
                            "its scores may differ from fp32 here (run `triage optimize` on this machine)")
        if "tuning" in candidate and (candidate["accepted"] or explicit):  # run size and threads measured fastest by `triage optimize`
            choice["tuning"] = candidate["tuning"]  # (a rejected one asked for by name runs as measured: QA 21, 3x slower untuned)
            if onnx_file(requested) and not threads:  # the layout that runs (torch's threads are the process's: rev87 #2)
                choice["tuning"], cut = _within_cpus(candidate["tuning"])
                warnings += [cut] if cut else []
            if explicit and (where := _measured_on(report)):  # QA 60 #4: the auto reason said it, --backend's did not
                choice["reason"] = f"{reason}, with the run size and threads {BACKENDS_FILE} measured fastest{where}"
        if not requested.endswith("fp32") and isinstance(report.get("rank_params"), dict) and "skipped" not in candidate:  # what "identical events" held for
            choice["events_checked"] = report["rank_params"]
    if requested == "torch-fp16" and not device.startswith("cuda"):
        raise ValueError("backend torch-fp16 needs a CUDA device; use torch-fp32, torch-bf16, ort-* or ov-* on CPU")
    if requested == "torch-bf16" and (reason := bf16_unsupported(device)):
        raise ValueError(f"backend torch-bf16: {reason}; use torch-fp16 or torch-fp32 on this GPU")
    if not requested.endswith("fp32") and "agreement" not in choice:  # QA 30: a rejected one warned, one never checked ran silently
        how = ("`triage optimize` on this GPU checks it" if requested == "torch-fp16" else  # rev90 #5: it checks no other on a GPU
               "`triage optimize` checks only torch-fp16 on a GPU" if device.startswith("cuda") else "`triage optimize` checks it")
        warnings.append(f"{requested} has not been checked against fp32 for these weights ({how}); its scores may differ from fp32")
    if onnx_file(requested):
        path = weights_dir / onnx_file(requested) if weights_dir else None
        if path is None or not path.exists():
            raise WeightsError(weights_dir or "weights", f"backend {requested} needs {onnx_file(requested)}; run `triage optimize` on this weights folder")
        choice["onnx_file"] = str(path.absolute())
        choice["onnx_sha256"] = file_sha256(path)  # QA 52: weights_sha256 covers config and safetensors, not the graph that scores
        vouching = parsed[0]
        recorded = (vouching or {}).get("onnx_sha256", {}).get(onnx_file(requested))
        if report is None and recorded and recorded != choice["onnx_sha256"]:  # QA 57 #2: a set-aside report (another model's,
            vouching = None  # copied in) says nothing of this file; judged by it, the folder's own export was called stale
        stale, warning = _stale_onnx(weights_dir, requested, vouching, model_sha256)
        if stale:
            raise WeightsError(path, f"exported from other network weights or preprocessing than {WEIGHTS_NAME} and "
                                     f"{CONFIG_NAME} hold now; run `triage optimize` again")
        warnings += [warning] if warning and report is None else []
        checked = (vouching or {}).get("onnx_sha256", {}).get(onnx_file(requested))
        if checked and checked != choice["onnx_sha256"]:  # swapped, edited or re-exported since the check: not what was measured
            raise WeightsError(path, f"not the file `triage optimize` checked against fp32 (SHA-256 {choice['onnx_sha256'][:12]}..., "
                                     f"{BACKENDS_FILE} records {checked[:12]}...); run `triage optimize` again")
        if report is not None and "onnx_sha256" not in report:  # QA 55: a swapped file then runs unseen
            warnings.append(f"{BACKENDS_FILE} predates the ONNX files' digests (2026-12-03): nothing shows that {onnx_file(requested)} "
                            "is the file its check measured; run `triage optimize` again")
    if parsed[0] is not None:  # what vouched for the choice, by its bytes (QA 55: an edited report is not in weights_sha256)
        choice["backends_json_sha256"] = file_sha256(weights_dir / BACKENDS_FILE)
    if requested == "torch-bf16" and not device.startswith("cuda") and bf16_emulated():
        warnings.append(f"torch-bf16: {EMULATED_BF16}")
    if warnings:
        choice["warnings"] = warnings
    return choice
