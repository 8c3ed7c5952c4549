"""What a CPU's bf16 and int8 arithmetic decides, without ../shared: which candidates `triage optimize` skips,
what a report that skipped one makes `--backend` say, a damaged report's text fields, and where a model card
says its lower-precision scores were computed."""

from __future__ import annotations

import json
import shutil
from itertools import product

import pytest

from capsule_triage import backend_choice, cpu_info, optimize as optimize_module
from capsule_triage.backend_choice import EMULATED_BF16, choose_backend, report_problem
from capsule_triage.backends import runs_here
from capsule_triage.cpu_info import host_record, machine
from capsule_triage.model_card import _computed_on
from capsule_triage.optimize import SKIPPED, candidate_line, skipped

CANDIDATES = ("torch-fp32", "torch-bf16", "ort-fp32", "ort-int8", "ov-fp32", "ov-bf16", "ov-int8")
WEIGHTS_ID = "a" * 64


def test_bf16_is_no_candidate_where_the_cpu_has_no_native_bf16(monkeypatch):
    """QA 60 #7: on an AVX2-only CPU optimize ran torch-bf16 emulated for minutes and recorded ov-bf16 as a failure.
    rev54: a CPU whose flags cannot be read (macOS, Windows) is not taken for one without bf16; OpenVINO says for itself."""
    for known, native, openvino in product((True, False), repeat=3):
        flags = frozenset({"avx2", "avx512_vnni", *(["avx512_bf16"] if native else [])}) if known else frozenset()
        monkeypatch.setattr(cpu_info, "cpu_flags", lambda: flags)  # the one source of cpu_info.bf16_emulated's rule
        assert cpu_info.bf16_emulated() is (known and not native)
        monkeypatch.setattr(optimize_module, "openvino_native_bf16", lambda: openvino)
        assert skipped("torch-bf16") == (SKIPPED["torch-bf16"] if known and not native else None)
        assert skipped("ov-bf16") == (SKIPPED["ov-bf16"] if runs_here("ov-fp32") and not openvino else None)
        assert {skipped(name) for name in CANDIDATES if not name.endswith("bf16")} == {None}
    assert "PyTorch would emulate it" in SKIPPED["torch-bf16"] and "runs bf16 only natively" in SKIPPED["ov-bf16"]  # rev54
    assert candidate_line("ov-bf16", {"accepted": False, "skipped": "why"}) == "  ov-bf16     skipped: why"
    assert candidate_line("ort-int8", {"accepted": False, "error": "ValueError: no"}) == "  ort-int8    failed: ValueError: no  -> rejected"


@pytest.fixture
def weights_with_report(random_weights, tmp_path):
    folder = tmp_path / "w"
    shutil.copytree(random_weights, folder)

    def write(candidates: dict) -> None:
        (folder / "backends.json").write_text(json.dumps({
            "weights_sha256": WEIGHTS_ID, "tolerance": 0.05, "machine": machine(), "candidates": candidates,
            "rank_params": {"enter_threshold": 0.5, "leave_threshold": 0.4, "smooth_seconds": 2.0}}))
    return folder, write


@pytest.mark.parametrize("native", [True, False])
def test_an_explicit_backend_the_report_skipped_says_it_was_never_checked(weights_with_report, monkeypatch, native):
    """Not "rejected by the agreement check" (it never ran); on a CPU with native bf16, how to check it; and no
    event settings recorded as checked for it (rev54: a later --threshold warned it 'was checked for other settings')."""
    folder, write = weights_with_report
    write({"torch-fp32": {"accepted": True, "frames_per_second": 10.0}, "torch-bf16": {"accepted": False, "skipped": SKIPPED["torch-bf16"]}})
    monkeypatch.setattr(backend_choice, "numerics", lambda: {"native_bf16": native, "int8_dot_product": False})
    monkeypatch.setattr(backend_choice, "bf16_emulated", lambda: not native)
    choice = choose_backend("torch-bf16", "cpu", folder, WEIGHTS_ID)
    here = "; this CPU has native bf16: `triage optimize` on it checks it" if native else ""
    assert choice["warnings"] == [f"torch-bf16 was not checked in backends.json ({SKIPPED['torch-bf16']}{here}); its scores may differ from fp32",
                                  *([] if native else [f"torch-bf16: {EMULATED_BF16}"])]
    assert choice["agreement"]["skipped"] == SKIPPED["torch-bf16"] and "events_checked" not in choice and "tuning" not in choice
    assert choose_backend("auto", "cpu", folder, WEIGHTS_ID)["backend"] == "torch-fp32"


def test_emulated_bf16_is_not_claimed_where_the_cpu_flags_are_unknown(random_weights, monkeypatch):
    monkeypatch.setattr(cpu_info, "cpu_flags", lambda: frozenset())  # e.g. macOS: no /proc/cpuinfo
    assert not any(EMULATED_BF16 in w for w in choose_backend("torch-bf16", "cpu", random_weights, "")["warnings"])


@pytest.mark.parametrize("key, value", [("reason", {"x": 1}), ("reason", 3), ("error", ["bad"]), ("skipped", None)])
def test_a_report_with_a_reason_that_is_not_text_is_set_aside_not_a_traceback(weights_with_report, key, value):
    """rev54: `"reason": {"x": 1}` on ort-int8 (any rejected row) was a TypeError traceback in `triage run --backend ort-int8`."""
    folder, write = weights_with_report
    candidates = {"torch-fp32": {"accepted": True, "frames_per_second": 10.0}, "torch-bf16": {"accepted": False, key: value}}
    write(candidates)
    kind = {dict: "dict", int: "int", list: "list", type(None): "NoneType"}[type(value)]
    assert report_problem({"candidates": candidates}) == f"torch-bf16: {key} must be text, got {kind}"
    choice = choose_backend("torch-bf16", "cpu", folder, WEIGHTS_ID)
    assert choice["backend"] == "torch-bf16" and "agreement" not in choice
    assert any(f"is malformed (torch-bf16: {key} must be text, got {kind}); run `triage optimize` again" in w for w in choice["warnings"])


def test_a_card_names_the_device_that_computed_lower_precision_scores():
    """QA 60 #3: the CPU for CPU backends; rev54: a GPU's fp16 scores were said to be computed on the host's CPU."""
    host = host_record()
    assert _computed_on({"backend": "torch-fp16", "device": "cuda:0", "host": host}) == ", computed on the CUDA GPU cuda:0"
    on_cpu = _computed_on({"backend": "ort-int8", "device": "cpu", "host": host})
    assert on_cpu.startswith(f", computed on {host['cpu']['processor'] or 'a CPU'} with ") and "int8 dot products: " in on_cpu
    assert _computed_on({"backend": "ov-fp32", "device": "cpu", "host": host}) == ""
