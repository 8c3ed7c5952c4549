"""Named pipeline presets (``pipelines/*.toml``): which model, how to read, how to rank.

A preset is found by name in the project's ``pipelines/`` folder (``$CAPSULE_TRIAGE_HOME/pipelines``, the
checkout's, or an installed wheel's ``<prefix>/share/capsule-triage/pipelines``)
or given as a path to a TOML file. Its ``[model] weights`` names a folder under ``weights/``, an
absolute/relative path, or ``hf-hub:OWNER/REPO`` (trained weights on the Hugging Face Hub).
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import os
import shlex
import sysconfig
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from .errors import PresetError, TriageError, WeightsError, unexpanded_note
from .model_config import LITE0_ARCH, ModelConfig
from .ranking import RankParams
from .reader import ReadOptions
from .run_options import batch_size_problem

DEFAULT_PIPELINE = "capsule-bleeding"
LEAVE_RATIO = 0.75  # leave_threshold = 0.75 x enter_threshold unless the preset sets it
THRESHOLDS = ("enter_threshold", "leave_threshold")  # the rank settings a preset may leave to the weights
# Seed B's batch per backbone (the largest that fit its 11 GB GPU; with the linear rule, part of the recipe: ../shared/docs/SEEDS.md)
SEED_B_BATCH = {"resnetv2_50x1_bit": 32, "resnetv2_101x1_bit": 16, "resnetv2_50x3_bit": 8, "resnetv2_101x3_bit": 4, "resnetv2_152x4_bit": 4}
# What a preset's [reader] may set: the frame size and crop come from the model's config, the
# timestamps from the input (--timestamps).
PRESET_READER_KEYS = ("batch_size", "decoder_threads", "folder_fps")


def project_home() -> Path:
    """The folder holding ``pipelines/`` and ``weights/``: $CAPSULE_TRIAGE_HOME, else the source checkout
    around the package, else what an installed wheel carries (:func:`installed_homes`)."""
    env = os.environ.get("CAPSULE_TRIAGE_HOME")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parent.parent
    if _is_checkout(checkout):
        return checkout
    return next((home for home in installed_homes() if (home / "pipelines").is_dir()), checkout)


@functools.lru_cache(maxsize=4)
def _is_checkout(folder: Path) -> bool:
    """Whether ``folder`` is a source tree of this project holding presets: its pyproject.toml names capsule-triage, or
    it has none (a copy of the tree's folders) and its pipelines/ holds presets; not site-packages with another package's
    ``pipelines`` beside this one (QA 107 #1, rev98 #9, rev99 #6)."""
    if not any((folder / "pipelines").glob("*.toml")):
        return False
    try:
        return tomllib.loads((folder / "pyproject.toml").read_text())["project"]["name"] == "capsule-triage"
    except FileNotFoundError:
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False


def installed_homes() -> list[Path]:
    """Where a wheel or a non-editable ``pip install .`` puts the presets and shipped weights
    (pyproject.toml's data-files: QA 24, such an install found no preset): beside the package's folder (QA 107 #2: ``pip
    install --target DIR`` puts them in ``DIR/share/capsule-triage``; first, as they came with the package imported: rev97
    #9), then ``<prefix>/share/capsule-triage`` of this environment, then of a ``pip install --user``."""
    homes = [Path(__file__).resolve().parent.parent / "share" / "capsule-triage", Path(sysconfig.get_path("data")) / "share" / "capsule-triage"]
    if f"{os.name}_user" in sysconfig.get_scheme_names():
        homes.append(Path(sysconfig.get_path("data", f"{os.name}_user")) / "share" / "capsule-triage")
    return list(dict.fromkeys(homes))


@dataclass
class Pipeline:
    """A resolved preset.

    Attributes:
        name: preset name.
        description: one line for --help and reports.
        source: the TOML file it came from.
        weights: resolved weights location (folder, file or ``hf-hub:`` repository).
        model: the preset's model description (used for bare weight files, checked against folders).
        read: reader settings.
        rank: rank settings as the preset gives them; thresholds it does not set are None: the weights' operating
            threshold, which :meth:`rank_params` resolves (QA 82 #2). A threshold set in code (``dataclasses.replace``) is
            taken, whatever its value (QA 105 #2, rev96 #1: one was ignored, and one equal to a placeholder 0.5 was).
        rank_overrides: the rank keys the preset set explicitly.
        model_keys: the ``[model]`` keys the preset set explicitly (besides ``weights``): those its own weights folder's
            config.json overrides are named in a warning (:func:`~capsule_triage.model_config.unused_preset_settings`).
        sha256: SHA-256 of the TOML's bytes as they were read (None: made in code), for run.json (QA 52, rev44).
    """

    name: str
    description: str
    source: Path
    weights: str
    model: ModelConfig
    read: ReadOptions
    rank: RankParams
    rank_overrides: frozenset
    sha256: str | None = None
    model_keys: frozenset = frozenset()
    file_thresholds: dict = field(default_factory=dict)  # the thresholds the preset file sets, as it sets them

    def thresholds_in_code(self) -> dict[str, float]:
        """The thresholds of ``rank`` set in code (``dataclasses.replace``), not as the preset file sets them: {key: value}
        (rev99 #1: by value, so that one the file sets and code changes counts as code's)."""
        return {key: value for key in THRESHOLDS
                if (value := getattr(self.rank, key)) is not None and self.file_thresholds.get(key) != value}

    def rank_params(self, model: ModelConfig, *, threshold: float | None = None, top_k: int | None = None) -> RankParams:
        """Rank parameters with thresholds resolved: CLI > preset > the model's operating threshold."""
        own = {key: getattr(self.rank, key) for key in THRESHOLDS if getattr(self.rank, key) is not None}
        enter, leave = _thresholds(own, model.threshold, threshold)
        if "leave_threshold" in own and threshold is None and leave > enter:  # QA 68 #2: lowered to enter without a word
            if code := self.thresholds_in_code():  # rev96 #6, rev98 #2: set in code, not in the file
                whence = "set in code" if "enter_threshold" in code else (
                    "the preset file's" if "enter_threshold" in own else "the operating threshold of the model's config.json")
                leave_from = "" if "leave_threshold" in code else " (the preset file's)"
                raise ValueError(f"pipeline.rank.leave_threshold {leave:g}{leave_from} is above the enter threshold {enter:g} "
                                 f"({whence}): give a leave_threshold at or below it, or set pipeline.rank.enter_threshold")
            raise PresetError(self.source, f"[rank] leave_threshold {leave:g} is above the enter threshold {enter:g}, the "
                                           "operating threshold of the model's config.json: set enter_threshold too, or a "
                                           "lower leave_threshold")
        params = replace(self.rank, enter_threshold=float(enter), leave_threshold=float(leave))
        if top_k is not None:
            params = replace(params, top_k=top_k)
        params.validate()
        return params


def find_preset(name_or_path: str | Path) -> Path:
    """The preset file: a name (``capsule-bleeding``) is a preset in ``pipelines/``, even when the
    working folder holds a file or folder of that name (QA: a data folder called capsule-bleeding
    made every default run fail); a ``.toml`` name or a path with a folder part is a file."""
    path = Path(name_or_path)
    candidate = project_home() / "pipelines" / f"{name_or_path}.toml"
    bare_name = isinstance(name_or_path, str) and path.suffix != ".toml" and "/" not in name_or_path and os.sep not in name_or_path
    if bare_name and candidate.is_file():
        return candidate
    known = sorted(p.stem for p in (project_home() / "pipelines").glob("*.toml"))
    with_folder = "/" in str(name_or_path) or os.sep in str(name_or_path)  # QA 93 #8: "-p p/h2" read as a preset's name
    if path.suffix == ".toml" or path.exists() or with_folder:
        if path.is_dir():
            raise PresetError(path, "is a folder, not a pipeline preset file (a .toml file or a preset name)")
        if not path.is_file():  # QA 22: 'capsule-bleeding.toml' typed from another folder
            hint = f" (the preset {path.stem} is given by its name: --pipeline {path.stem})" if path.stem in known else ""
            raise PresetError(path, f"pipeline preset file not found{hint}{unexpanded_note(path)}")  # QA 113 #3
        return path
    if not candidate.is_file():
        if not known:  # QA 24: an installed wheel said "no such pipeline preset (known: )"
            env = os.environ.get("CAPSULE_TRIAGE_HOME")
            fix = (f"CAPSULE_TRIAGE_HOME={env} should be a checkout holding pipelines/ and weights/" if env else
                   f"nor does {' or '.join(map(str, installed_homes()))}, where an installed wheel's go): set "
                   "CAPSULE_TRIAGE_HOME to a checkout holding pipelines/ and weights/")
            raise PresetError(name_or_path, f"no such pipeline preset: {candidate.parent} holds no presets ({fix}"
                                            f"{')' if env else ''}, or give --pipeline FILE.toml")
        close = difflib.get_close_matches(str(name_or_path), known, n=1)
        raise PresetError(name_or_path, "no such pipeline preset" + (f"; did you mean {close[0]}?" if close else "")
                          + f" (known: {', '.join(known)})")
    return candidate


def load_pipeline(name_or_path: str | Path = DEFAULT_PIPELINE) -> Pipeline:
    """Read and validate a preset.

    Raises:
        PresetError: missing file, bad TOML, unknown keys or bad values.
        ValueError: ``name_or_path`` is neither a name nor a path.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):  # QA 58 #7: None was pathlib's TypeError
        raise ValueError(f"load_pipeline takes a preset name or a path to a preset file, got {type(name_or_path).__name__}")
    if not str(name_or_path).strip():  # QA 68 #10: "" was the working folder ("." is a folder)
        raise PresetError(repr(str(name_or_path)), "no preset named: give a preset name or a .toml file")
    path = find_preset(name_or_path)
    try:
        raw = path.read_bytes()  # hashed as read; decoded as read_text() did, a BOM and lone CRs accepted (rev45)
        data = tomllib.loads(raw.decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n"))
    except OSError as exc:  # QA 107 #6: "not valid TOML ([Errno 13] Permission denied)"
        raise PresetError(path, f"cannot read it ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PresetError(path, f"not valid TOML ({str(exc)[:160]})") from None
    for key in ("name", "description"):  # QA 68 #10: name = 5 was "[model] name", a list description taken as its text
        if not isinstance(data.get(key, ""), str):
            raise PresetError(path, f"{key} must be a string, got {data[key]!r}")
    if not isinstance(data.get("model", {}), dict):
        raise PresetError(path, f"[model] must be a table of settings, got {data['model']!r}")
    model_data = dict(data.get("model", {}))
    weights = model_data.pop("weights", "")
    if not isinstance(weights, str):
        raise PresetError(path, f"[model] weights must be a string (a folder under weights/, a path or hf-hub:OWNER/REPO), got {weights!r}")
    try:
        model = ModelConfig.from_dict({"name": data.get("name", path.stem), **model_data}, path)
    except WeightsError as exc:
        raise PresetError(path, f"[model] {exc.message}") from None
    reader = data.get("reader", {})
    if isinstance(reader, dict) and "batch_size" in reader and (problem := batch_size_problem(reader["batch_size"])):
        raise PresetError(path, f"[reader] batch_size {problem}")  # as --batch-size (rev87 #4: 1,000,000 read a study as one batch)
    read = _section(ReadOptions, reader, path, "reader", keys=PRESET_READER_KEYS)
    rank_data = data.get("rank", {})
    rank = _section(RankParams, _as_it_runs(rank_data, model.threshold), path, "rank")  # checked as a run of its own model ranks
    rank = replace(rank, **{key: None for key in THRESHOLDS if key not in rank_data})  # then unset: the weights' (rank_params)
    unknown = sorted(set(data) - {"name", "description", "model", "reader", "rank"})
    if unknown:  # a table is a section; a stray value (weights_dir = "y" above [model]) a key (QA 68 #10)
        tables = [key for key in unknown if isinstance(data[key], dict)]
        raise PresetError(path, f"unknown section(s) {tables}; known: [model], [reader], [rank]" if tables else
                          f"unknown key(s) {unknown} before [model]; known there: name, description (did a key miss its section?)")
    return Pipeline(
        name=str(data.get("name", path.stem)), description=str(data.get("description", "")), source=path,
        weights=resolve_weights(weights, path), model=model, read=read, rank=rank, rank_overrides=frozenset(rank_data),
        file_thresholds={key: rank_data[key] for key in THRESHOLDS if isinstance(rank_data, dict) and key in rank_data},
        model_keys=frozenset(model_data),
        sha256=hashlib.sha256(raw).hexdigest(),
    )


def _thresholds(rank: dict, model_threshold: float, threshold: float | None = None) -> tuple[float, float]:
    """(enter, leave) as a run ranks: ``threshold`` (--threshold) > the preset's enter_threshold > the model's operating
    threshold; leave is the preset's leave_threshold unless --threshold is given, else LEAVE_RATIO x enter."""
    enter = threshold if threshold is not None else rank.get("enter_threshold", model_threshold)
    return enter, rank["leave_threshold"] if "leave_threshold" in rank and threshold is None else LEAVE_RATIO * enter


def _as_it_runs(rank_data, model_threshold: float):
    """The [rank] table with both thresholds as a run of the preset's own model ranks at, to be validated (QA 68 #2,
    rev64: one set alone was checked against RankParams' defaults, enter 0.5 and leave 0.35, not against the other)."""
    numbers_only = lambda value: isinstance(value, (int, float)) and not isinstance(value, bool)
    if not isinstance(rank_data, dict) or not all(numbers_only(rank_data.get(key, 0.0)) for key in ("enter_threshold", "leave_threshold")):
        return rank_data  # a value of the wrong type: validate names it
    enter, leave = _thresholds(rank_data, model_threshold)
    return {**rank_data, "enter_threshold": enter, "leave_threshold": leave}


def _section(cls, values, path: Path, section: str, keys: tuple[str, ...] | None = None):
    if not isinstance(values, dict):
        raise PresetError(path, f"[{section}] must be a table of settings, got {values!r}")
    known = set(keys or (f.name for f in fields(cls)))
    unknown = sorted(set(values) - known)
    if unknown:
        raise PresetError(path, f"[{section}] unknown key(s) {unknown}; known: {sorted(known)}")
    try:
        obj = cls(**values)
        if hasattr(obj, "validate"):
            obj.validate()
    except (TypeError, ValueError) as exc:
        raise PresetError(path, f"[{section}] {exc}") from None
    return obj


def resolve_weights(weights: str, preset_path: Path) -> str:
    """``name`` -> weights/name of :func:`project_home`, or, when that has none, of the preset's own
    checkout (a preset in ``pipelines/`` with a weights folder beside it: QA 24, a checkout's preset given
    by path to an installed wheel looked only in site-packages), or else beside the preset, if there; paths (``./x``,
    ``../w/x``) are relative to the preset; hub names pass through."""
    if not weights or weights.startswith(("hub:", "hf-hub:")):
        return weights
    path = Path(weights)
    if path.is_absolute():
        return str(path)
    preset_dir = Path(preset_path).absolute().parent
    if len(path.parts) == 1 and not weights.startswith("."):  # a name ("./x" is a path: QA 68 #3, it was read as the name x)
        home = project_home() / "weights" / path
        beside = preset_dir.parent / "weights" / path  # only another checkout's own pipelines/ and weights/
        if not home.exists() and preset_dir.name == "pipelines" and (beside / "config.json").is_file():
            return str(beside)
        if not home.exists() and (preset_dir / path).exists():  # weights beside a preset of one's own
            return str(preset_dir / path)
        return str(home)
    return str((preset_dir / path).resolve())


def preset_for_weights(folder: str | Path) -> str:
    """The name of the preset whose weights are ``folder`` (``triage optimize`` checks events with its
    settings), else the default preset's."""
    for path in sorted((project_home() / "pipelines").glob("*.toml")):
        try:
            pipeline = load_pipeline(path.stem)
        except TriageError:
            continue
        if pipeline.weights and not pipeline.weights.startswith(("hub:", "hf-hub:")) and Path(pipeline.weights).resolve() == Path(folder).resolve():
            return pipeline.name
    return DEFAULT_PIPELINE


def weights_not_installed(pipeline: Pipeline) -> WeightsError:
    """How to train the preset's weights: its model's classes (in head order), abnormal classes,
    input size and border on the command line (QA 16: the hint trained alphabetical classes and the
    default circle border, weights the preset then refused or ran differently)."""
    model = pipeline.model
    arch = model.architecture
    bit = "_bit" in arch  # seed B's recipe: BiT-M (ImageNet-21k) weights, fine-tuned whole with BiT-HyperRule (QA 25)
    tag = ".goog_in21k" if bit else ".tv_in1k" if arch == "resnet50" else ""  # QA 104 #6: timm's resnet50 is a1_in1k, its own recipe
    init = "" if arch == LITE0_ARCH else (f" --init hub:{arch}{tag}` ({'BiT-M ImageNet-21k' if bit else 'ImageNet'} "
                                          "weights from the hub; offline: `--init FILE`, a .safetensors, .pth or BiT .npz checkpoint)")
    shape = (f" --classes {shlex.quote(','.join(model.class_names))} --abnormal {shlex.quote(','.join(model.abnormal_classes))} "
             f"--input-size {model.input_size}"
             f" --border {model.border} --border-radius {model.border_radius:g}" + (" --strategy full --schedule bit --class-weighting none" if bit else "")
             + (f" --batch-size {SEED_B_BATCH[arch]}" if arch in SEED_B_BATCH else "")  # rev99 #2: part of the recipe (the lr scales)
             # seed A's ResNet-50 (QA 81 #6: the hint trained with the default augmentation and class weights; QA 104 #6: and
             # 2 + 5 epochs, not seed A's 100 + 100; #2: seed B's loss weighs its classes alike too)
             + (" --augment rotate-zoom --class-weighting none --head-epochs 100 --epochs 100" if arch == "resnet50" else ""))
    shipped = Path(pipeline.source).resolve().parent == (project_home() / "pipelines").resolve()  # rev103 #5: one comparison
    if pipeline.weights and shipped and Path(pipeline.source).stem == DEFAULT_PIPELINE:  # QA 107 #7
        return WeightsError(pipeline.weights, f"the weights of pipeline '{pipeline.name}' ship with capsule-triage and this "
                                              "installation lacks them: reinstall it, or set CAPSULE_TRIAGE_HOME to a checkout "
                                              "holding weights/, or pass --weights PATH")
    command = f"`triage train DATA --arch {arch}{shape} -o {shlex.quote(pipeline.weights) if pipeline.weights else 'FOLDER'}" + (init or "`")
    named = f"pipeline '{pipeline.name}'" + ("" if shipped or not pipeline.weights else f" ({pipeline.source})")  # QA 113 #4:
    # one's own copy of a preset was read as the shipped one (the file is the error's path when it names no weights)
    what = (f"weights for {named} are not installed" if pipeline.weights else  # QA 68 #6: "-o " and no more
            f"{named} names no weights ([model] weights)")
    return WeightsError(
        pipeline.weights or pipeline.source,
        f"{what}; train them with {command}, "
        f"or pass --weights PATH (weights folder, .safetensors, .pth state dict or BiT .npz)",
    )


def presets_with(class_names: list[str], *, any_order: bool = False) -> list[str]:
    """The shipped presets whose model has exactly these classes, in this order (``any_order``: in any order)."""
    named = []
    for path in sorted((project_home() / "pipelines").glob("*.toml")):
        try:
            theirs = load_pipeline(path.stem).model.class_names
            if theirs == list(class_names) or (any_order and sorted(theirs) == sorted(class_names)):
                named.append(path.stem)
        except TriageError:
            continue
    return named


def presets_hint(class_names: list[str]) -> str:
    """What to run weights of ``class_names`` with: the presets of exactly these classes (QA 44: `--weights` of a
    3-class model alone met the default preset's two classes, and nothing named `-p gastric-3class-resnet50`),
    else a preset file of one's own."""
    if named := presets_with(class_names):
        return f"; preset {' or '.join(named)} has these classes: run with -p {named[0]}"
    return "; no preset has these classes: give -p FILE.toml, a preset of your own naming them (as pipelines/*.toml do)"


PRETRAINED_HEAD = 1000  # a head of this many classes or more: ImageNet's 1,000 or 21,841, a pretrained network, not a triage model


def fitting_presets_hint(shapes: dict[str, tuple[int, ...]], classes: int | None, path) -> str:
    """For a loose weights file that does not fit the preset's model: the shipped presets whose model its tensors'
    ``shapes`` fit (rev39: a 3-class file under the 2-class default preset was a shape error naming no way on), a
    pretrained network's head (``classes``, where only the head differs) said to start training, else what to write."""
    from .weights import meta_model, mismatches, shapes_of  # here, not at the top: importing presets loads no torch

    named = []
    for preset in sorted((project_home() / "pipelines").glob("*.toml")):
        try:
            model = load_pipeline(preset.stem).model
            if mismatches(shapes_of(meta_model(model).state_dict()), shapes) is None:
                named.append((preset.stem, model))
        except TriageError:
            continue
    if named:
        stem, model = named[0]
        return (f"; they fit the model of preset {' and '.join(n for n, _ in named)} ({model.architecture}, {len(model.class_names)} "
                f"classes): run with -p {stem} if they were trained for its classes {', '.join(model.class_names)}, in that order")
    if classes is not None and classes >= PRETRAINED_HEAD:
        return (f" (pretrained weights, e.g. ImageNet's): they start training (`triage train --init {shlex.quote(str(path))}`), they do not score")
    return ("; no preset's model fits them: give -p FILE.toml, a preset of your own naming their architecture and "
            + (f"{classes} classes" if classes else "classes") + " (as pipelines/*.toml do), or a weights folder (with its config.json)")


def preset_order_note(class_names: list[str]) -> str | None:
    """A note when the classes are a shipped preset's in another order (QA 71 #3: trained without --classes, or with them
    reordered, `triage run -p PRESET` then refused the weights, said only at the run), or None."""
    if presets_with(class_names) or not (named := presets_with(class_names, any_order=True)):
        return None
    theirs = load_pipeline(named[0]).model.class_names
    return (f"classes {', '.join(class_names)} are preset {named[0]}'s in another order ({', '.join(theirs)}): `triage run -p "
            f"{named[0]}` refuses weights whose head has another order; give --classes {shlex.quote(','.join(theirs))} to train in its order")
