"""What :func:`capsule_triage.evaluate.evaluate` refuses before it scores anything or changes config.json.

``check_arguments`` takes ``evaluate``'s arguments and returns the split and the ``--codec`` parsed; each
refusal names the option (as ``triage eval`` spells it) and what to give instead. ``METRICS_FILE`` and
``OUTPUT_FILES`` are what an evaluation's ``--out`` folder holds.
"""

from __future__ import annotations

from pathlib import Path

from .backends import BACKENDS
from .datasets import SPLIT_ALIASES
from .errors import InputError, WeightsError
from .model_card import check_card, check_section_name
from .outputs import StagedOutput
from .recompress import Codec

METRICS_FILE = "metrics.json"  # makes a folder an earlier evaluation's (`--out` replaces only those, with --force)
OUTPUT_FILES = frozenset({METRICS_FILE, "predictions.parquet", "thresholds.parquet", "groups.parquet", "roc.png"})  # all --out holds


def check_arguments(weights: str | Path, split: str, *, out_dir: str | Path | None, target_sensitivity: float | None,
                    val_data: str | Path | None, model_card: str | None, backend: str, codec: str | None,
                    force: bool) -> tuple[str, Codec | None]:
    """Refuse what :func:`~capsule_triage.evaluate.evaluate` cannot do, before any work; return the split (its
    aliases resolved) and the codec parsed (None: no round trip)."""
    split = SPLIT_ALIASES.get(split.strip().lower(), split) if split.strip().lower() != "all" else "all"  # QA 31: 'validation' refused
    parsed = _parse_codec(codec)
    if val_data is not None and target_sensitivity is None:  # QA 56 #8: ignored, even a file that does not exist
        raise InputError("--val-data", "is the data --target-sensitivity chooses the threshold on; give both, or neither "
                                       "(the evaluation itself scores DATA's --split)")
    if force and out_dir is None:  # QA 75: accepted and ignored (config.json and the card are rewritten without it)
        raise InputError("--force", "replaces the --out folder of an earlier evaluation; give --out DIR with it, or leave it "
                                    "out (config.json and --model-card's section are rewritten without it)")
    if target_sensitivity is not None and not 0 < target_sensitivity <= 1:  # QA 56 #9: refused in the data file's name
        raise InputError("--target-sensitivity", f"a sensitivity in (0, 1] (1: every abnormal validation frame flagged), got {target_sensitivity:g}")
    if backend not in ("auto", *BACKENDS):  # rev110 #8: named as a backend by the --border refusal; refused after the stills
        raise InputError("--backend", f"auto or one of {', '.join(BACKENDS)}, got {backend!r}")
    if target_sensitivity is not None and backend == "auto":  # rev109 #2: auto named a backend the new threshold made stale
        raise InputError("--backend", "auto with --target-sensitivity: the new threshold makes `triage optimize`'s choice stale "
                                      "(`triage run --backend auto` takes torch-fp32 until `triage optimize` runs again); give "
                                      "the backend by name")
    _check_outputs(weights, out_dir, model_card, force, card=model_card is not None or target_sensitivity is not None)
    if str(weights).startswith("hf-hub:") and (target_sensitivity is not None or model_card is not None):
        raise WeightsError(weights, "--target-sensitivity and --model-card write into a weights folder of your own; copy "
                                    "this one out of the Hugging Face cache first")
    return split, parsed


def _check_outputs(weights: str | Path, out_dir: str | Path | None, model_card: str | None, force: bool, *, card: bool) -> None:
    """Refuse an unusable --out or --model-card (or a card whose sections this run would rewrite that has broken
    markers, ``card``) before anything is scored or config.json is changed."""
    if model_card is not None:
        check_section_name(model_card)
    if card:  # --model-card writes both sections; --target-sensitivity alone rewrites the training section where there is one
        check_card(Path(weights), ("training",) if model_card is None else (model_card, "training"), only_begun=model_card is None)
    if out_dir is not None:
        StagedOutput(out_dir, force=force, marker=METRICS_FILE, only=OUTPUT_FILES).check()


def _parse_codec(codec: str | None) -> Codec | None:
    """``--codec`` parsed before any work (None: no round trip)."""
    try:
        return Codec.parse(codec) if codec is not None else None
    except ValueError as exc:
        raise InputError("--codec", str(exc)) from None
