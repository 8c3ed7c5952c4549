"""A training run's checkpoint: ``checkpoint/state.safetensors`` (model, SGD momentum, torch RNG; no
pickle) + ``checkpoint/state.json`` (phase, step, log, recipe, data digest), written atomically, from
which ``triage train --resume`` continues exactly where the run stopped."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .json_files import read_json
from .errors import OutputError, WeightsError
from .model_config import CHECKPOINT_DIR  # noqa: F401 - re-exported (named where torch is not imported)
from .weights import shareable

SAVE_ID = "save_id"


def save_checkpoint(out: Path, model: nn.Module, optimizer: torch.optim.Optimizer, names: list[str], state: dict) -> None:
    """Write the model, the momentum of the trainable parameters ``names``, the RNG and ``state``."""
    folder = out / CHECKPOINT_DIR
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}  # from any device
    params = dict(model.named_parameters())
    for name in names:
        buffer = optimizer.state.get(params[name], {}).get("momentum_buffer")
        if buffer is not None:
            tensors[f"optim.{name}"] = buffer.cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    save_id = uuid.uuid4().hex  # QA 112 #3: the two files of one save name it, so a pair of two saves (a kill between the
    try:  # renames) is refused, not resumed into another model
        folder.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(folder / "state.safetensors.tmp"), metadata={SAVE_ID: save_id})
        shareable(folder / "state.safetensors.tmp")
        (folder / "state.json.tmp").write_text(json.dumps({**state, SAVE_ID: save_id}, indent=1))
    except (OSError, SafetensorError) as exc:  # QA 112 #1/#2: a full disk was a traceback, and left an empty checkpoint/
        for name in ("state.safetensors.tmp", "state.json.tmp"):
            (folder / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if empty: no checkpoint was there before
        raise OutputError(folder, f"cannot write the checkpoint ({str(exc).strip()[:160]}); free space and run the command "
                                  "again (with --resume if an earlier checkpoint is there)") from None
    os.replace(folder / "state.safetensors.tmp", folder / "state.safetensors")
    os.replace(folder / "state.json.tmp", folder / "state.json")


def load_checkpoint(out: Path) -> dict | None:
    """The saved state with its tensors under ``resume_tensors``; None when ``out`` has no checkpoint."""
    folder = out / CHECKPOINT_DIR
    if not (folder / "state.json").is_file():
        return None
    try:
        state = read_json(folder / "state.json")
        if not state.get("finished"):
            with safe_open(str(folder / "state.safetensors"), "pt") as handle:
                saved_as = (handle.metadata() or {}).get(SAVE_ID)
            if state.get(SAVE_ID) != saved_as:  # (checkpoints before 2026-12-07 name none: both None)
                raise WeightsError(folder, "its state.json and state.safetensors are of two different saves (the run was "
                                           "killed between them): train again into another folder")
        state["resume_tensors"] = None if state.get("finished") else load_file(str(folder / "state.safetensors"))
    except (OSError, ValueError, SafetensorError) as exc:  # QA 112 #4: a truncated state.safetensors was a traceback
        raise WeightsError(folder, f"unreadable checkpoint ({str(exc).strip()[:200]})") from None
    return state


def mark_finished(out: Path, elapsed_seconds: float) -> None:
    """Record in the checkpoint's state.json that the run finished, atomically (QA 112 #9: a kill while it was
    rewritten in place left a truncated state.json, an "unreadable checkpoint" beside finished weights)."""
    path = out / CHECKPOINT_DIR / "state.json"
    partial = path.with_name("state.json.tmp")
    try:
        partial.write_text(json.dumps({**read_json(path), "finished": True, "elapsed_seconds": elapsed_seconds}, indent=1))
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def is_finished(out: Path) -> bool:
    """Whether ``out`` holds a training run that finished (its checkpoint says so)."""
    try:
        state = read_json(out / CHECKPOINT_DIR / "state.json")
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and bool(state.get("finished"))  # rev63 #4: a JSON list raised AttributeError


def drop_resume_tensors(out: Path) -> None:
    """Once a run has finished: delete the model, momentum and RNG its checkpoint held for ``--resume``, which nothing
    reads again (a rerun with --resume compares state.json and returns the weights as they are). QA 65 #10: a
    finished Lite0 folder kept 26 MB of them; a BiT-M R152x4 one would keep ~7 GB."""
    (out / CHECKPOINT_DIR / "state.safetensors").unlink(missing_ok=True)


def restore(model: nn.Module, optimizer: torch.optim.Optimizer, names: list[str], tensors: dict) -> None:
    """Load what :func:`save_checkpoint` wrote into ``model`` and ``optimizer`` (on the model's device,
    which may differ from the one the run started on), and the RNG."""
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    params = dict(model.named_parameters())
    for name in names:
        if f"optim.{name}" in tensors:
            optimizer.state[params[name]]["momentum_buffer"] = tensors[f"optim.{name}"].to(params[name].device, copy=True)
    torch.set_rng_state(tensors["rng.torch"])
