"""What a training run is: ``TrainOptions``, their checks, the recipe a resumed run must repeat,
the model description (``ModelConfig``) made from them and the data, and the device it trains on."""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields, replace
from pathlib import Path

import timm
import torch

from .datasets import class_order, split_counts, tool_output
from .distill import LOSSES
from .device import PRECISIONS, check_precision, exact_fp32, resolve_device
from .errors import InputError, WeightsError
from .imagenet_init import LITE0_ARCH
from .json_files import read_json
from .outputs import check_creatable
from .augment import POLICIES
from .bf16_weights import WEIGHT_PRECISIONS, cannot_round
from .checkpoint import CHECKPOINT_DIR, is_finished
from .model_config import ModelConfig
from .recompress import CODECS
from .schedule import STRATEGIES
from .stability import COPIES
from .splits import one_class_note
from .training_images import TRAINING_IMAGES
from .transfer import INIT_SOURCES, N_BLOCKS

SCHEDULES = ("epochs", "bit")
LOG_NAME = "train_log.csv"  # one row per epoch, beside the weights
FIRST_WRITES = ("config.json", "model.safetensors", LOG_NAME, TRAINING_IMAGES)  # what a new run refuses to find in its folder
# Everything a run writes in its folder, with the leftovers of a write cut short (what an interrupt before the first
# checkpoint removes, of what was not there before it: review rev60 #2, a half-written checkpoint/ refused every rerun)
RUN_WRITES = (*FIRST_WRITES, CHECKPOINT_DIR, "MODEL_CARD.md", Path(LOG_NAME).with_suffix(".tmp").name)  # training_images: written_whole
RUNTIME_FIELDS = ("output", "resume", "stop_after_steps", "checkpoint_every", "threads", "device", "progress", "command")


@dataclass
class TrainOptions:
    """A training run. Fields not in ``RUNTIME_FIELDS`` must match when resuming."""

    data: Path  # manifest CSV or image-folder tree (see datasets.py)
    output: Path  # weights folder to write
    arch: str = LITE0_ARCH  # timm architecture
    init: str = "imagenet"  # "none" | "imagenet" (Lite0 only) | "hub:<timm tag>" | weights file/folder | BiT .npz
    strategy: str = ""  # head | full | two-stage; "": the schedule's own (default_strategy), or a resumed checkpoint's
    lock: int = 0  # freeze logical blocks 1..lock (0-5) in the full stage
    schedule: str = "epochs"  # "epochs" (cosine over `epochs`) | "bit" (BiT-HyperRule)
    epochs: int = 5  # full-stage (or head-strategy) epochs for the "epochs" schedule
    head_epochs: int = 2  # head stage of two-stage
    lr: float = 0.005  # SGD lr of the "epochs" schedule
    head_lr: float = 0.01  # SGD lr of the head stage of two-stage
    budget_scale: float = 1.0  # fraction of the BiT image budget (e.g. 0.03 for CPU runs)
    batch_size: int = 32
    weight_decay: float = 0.0
    augment: str = "bit"  # bit (seed B) | flip-rotate (seed C) | rotate-zoom (seed A) | none
    recompress: float = 0.0  # probability of a lossy round trip per frame after augmentation (recompress.py)
    recompress_codec: str = "h264"  # h264 (a clip per batch, CRF 18-35) | jpeg (quality 30-95)
    stability: float = 0.0  # weight of the stability loss: KL between a frame's prediction and its copy's (stability_copy)
    stability_sigma: float = 2.0  # grey levels of the copy's Gaussian pixel noise
    stability_copy: str = "noise"  # noise (Gaussian pixel noise) | bf16 (the same frames, every layer's input rounded to bf16)
    weights_precision: str = "fp32"  # fp32 | bf16 (stored as OpenVINO's bf16 rounds them: bf16_weights.py)
    distill: str = ""  # teacher weights: the loss on the labels becomes distill_weight x the distill_loss (distill.py)
    distill_weight: float = 1.0
    distill_loss: str = "kl"  # kl (the teacher's probabilities) | logits (its logits' pairwise differences, squared error)
    class_weighting: str = "balanced"  # balanced (loss weights n/(C*n_c)) | none
    class_names: list[str] | None = None  # head order; default normal-looking first, then natural order
    abnormal_classes: list[str] | None = None  # default: every class but the first
    input_size: int | None = None  # default: the architecture's timm input size
    border: str = "circle"
    border_radius: float = 0.89
    val_fraction: float = 0.2  # of the training pool, by whole groups, when the data has no val split
    seed: int = 0
    name: str = ""
    resume: bool = False  # continue from output/checkpoint
    stop_after_steps: int | None = None  # stop this invocation after N steps (time boxes, tests)
    checkpoint_every: int = 50  # steps between checkpoints (and at every epoch end)
    threads: int = 2
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N; a resumed run may change it
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; fp16 with loss scaling, CUDA only)
    progress: bool = True
    command: str = ""  # the command line, recorded in provenance


def default_strategy(schedule: str) -> str:
    """The strategy of a run that names none: seed B's "global" fine-tuning (``full``, the better of its two) with its
    BiT-HyperRule, seed A's head-then-full (``two-stage``) otherwise. QA 98 #2: ``--schedule bit`` alone, as the BiT
    preset's training command gives it, added a head stage seed B never ran."""
    return "full" if schedule == "bit" else "two-stage"


def with_strategy(options: TrainOptions) -> TrainOptions:
    """``options`` with its strategy named: as given; else, resuming, the checkpoint's (a run begun when every
    schedule's default was two-stage goes on as it began); else :func:`default_strategy`."""
    if options.strategy != "":  # rev94 #8: None from library code is refused by check_options, not taken as ""
        return options
    begun = None
    if options.resume:
        try:
            begun = read_json(Path(options.output) / CHECKPOINT_DIR / "state.json")["recipe"]["strategy"]
        except (OSError, ValueError, KeyError, TypeError):  # no checkpoint, or not one: train() says so
            begun = None
    return replace(options, strategy=begun if begun in STRATEGIES else default_strategy(options.schedule))


def training_device(options: TrainOptions) -> torch.device:
    """The device of ``options.device``; on CUDA with cuDNN's deterministic algorithms, so that a seeded
    run repeats (as far as the GPU's kernels allow: a few have no deterministic backward pass).

    Raises:
        ValueError: no such device, or a precision it cannot train in (as ``triage run``'s ``--device``).
    """
    device = resolve_device(options.device)
    check_precision(options.precision, device)
    if device.type == "cuda":
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        exact_fp32(device)  # no TF32 from the start, whatever the precision: validation turns it off (as triage run
        # computes), and a run must not change arithmetic after its first epoch (a resumed run would differ)
    return device


def device_label(device: torch.device) -> str:
    return f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "cpu"


def check_options(o: TrainOptions) -> None:
    """Refuse options no run could use, each named by its `triage train` flag (the library's field: the same name in
    snake_case)."""
    given, o = o, with_strategy(o)
    checks = [(o.strategy in STRATEGIES, f"--strategy must be one of {STRATEGIES}, got {o.strategy!r}"),
              (o.schedule in SCHEDULES, f"--schedule must be one of {SCHEDULES}, got {o.schedule!r}"),
              (o.augment in POLICIES, f"--augment must be one of {POLICIES}, got {o.augment!r}"),
              (0.0 <= o.recompress <= 1.0, f"--recompress is a probability in [0, 1], got {o.recompress}"),
              (o.recompress_codec in CODECS, f"--recompress-codec must be one of {CODECS}, got {o.recompress_codec!r}"),
              (o.stability >= 0 and o.stability_sigma > 0, f"--stability must be >= 0 and --stability-sigma > 0, got {o.stability:g}, {o.stability_sigma:g}"),
              (o.stability_copy in COPIES, f"--stability-copy must be one of {COPIES}, got {o.stability_copy!r}"),
              (not (o.stability_copy == "bf16" and not o.stability), "--stability-copy bf16 is the copy of stability training: "
               "give its weight, --stability W > 0"),
              (not (o.stability_copy == "bf16" and o.precision != "fp32"), f"--stability-copy bf16 compares fp32 arithmetic with bf16's: "
               f"train with --precision fp32, not {o.precision}"),
              (o.weights_precision in WEIGHT_PRECISIONS, f"--weights-precision must be one of {WEIGHT_PRECISIONS}, got {o.weights_precision!r}"),
              (o.distill_weight > 0, f"--distill-weight must be > 0, got {o.distill_weight:g}"),
              (bool(o.distill) or o.distill_weight == 1.0, "--distill-weight weighs the --distill loss: give the teacher, --distill WEIGHTS"),
              (o.distill_loss in LOSSES, f"--distill-loss must be one of {LOSSES}, got {o.distill_loss!r}"),
              (bool(o.distill) or o.distill_loss == "kl", "--distill-loss chooses the --distill loss: give the teacher, --distill WEIGHTS"),
              (o.class_weighting in ("balanced", "none"), f"--class-weighting must be 'balanced' or 'none', got {o.class_weighting!r}"),
              (o.precision in PRECISIONS, f"--precision must be one of {PRECISIONS}, got {o.precision!r}"),
              (0 <= o.lock < N_BLOCKS, f"--lock must be in 0..{N_BLOCKS - 1}, got {o.lock}"),
              (not (o.lock and o.strategy == "head"), "--lock applies to the full stage (--strategy full or two-stage), not to head"),
              (not (o.init == "none" and o.lock and not o.resume),  # rev24: random blocks were frozen without a word (a run
               # checkpointed before may still finish: rev25)
               f"--init none starts from random weights and --lock {o.lock} would freeze {'block 1' if o.lock == 1 else f'blocks 1-{o.lock}'} of them: train from "
               "scratch with --lock 0 (seed C's lock0), or lock blocks of pretrained weights (--init)"),
              (o.batch_size >= 1 and o.epochs >= 1 and o.head_epochs >= 1, f"--batch-size, --epochs and --head-epochs must be >= 1, got {o.batch_size}, {o.epochs}, {o.head_epochs}"),
              *((v > 0, f"{k} must be > 0, got {v:g}") for k, v in (("--lr", o.lr), ("--head-lr", o.head_lr), ("--budget-scale", o.budget_scale)))]
    for ok, message in checks:
        if not ok:
            raise InputError("options", message)
    if not o.resume and (unused := unused_options(given)):  # a checkpoint of an earlier version may hold them: it resumes as it began
        raise InputError("options", "; ".join(unused))


def check_model(options: TrainOptions, model: torch.nn.Module, input_size: int) -> None:
    """Refuse what the built model cannot train as asked. QA 104 #4: seed B's batch sizes reach 1, which BiT's group norm
    takes; batch norm that trains on one image a step normalises each image by its own statistics, not those inference
    uses (rev96 #7; ``train_mode`` keeps frozen layers' statistics)."""
    if options.weights_precision == "bf16" and (reason := cannot_round(model, input_size)):
        raise InputError("options", f"--weights-precision bf16: {reason}; train with --weights-precision fp32")
    if options.batch_size == 1 and with_strategy(options).strategy != "head" and any(
            isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise InputError("options", f"--batch-size 1: {options.arch} has batch norm layers, which trained on one image a step "
                                    "normalise each image by its own statistics, not those inference uses (BiT's group norm "
                                    "takes 1, and --strategy head keeps them frozen): give --batch-size 2 or more")


def unused_options(o: TrainOptions) -> list[str]:
    """QA 75 #2: options the chosen mode ignores, given anyway (set away from their defaults), each said with its fix: they
    were recorded in the provenance as if they had been used (``--schedule bit --lr 0.1`` ran the BiT-HyperRule's lr)."""
    default = {f.name: f.default for f in fields(TrainOptions) if f.default is not MISSING}

    def given(*names: str) -> tuple[str, str, str]:
        """The flags given of ``names``, and the verb and pronoun that agree with them."""
        flags = [f"--{name.replace('_', '-')}" for name in names if getattr(o, name) != default[name]]
        return " and ".join(flags), "set" if len(flags) > 1 else "sets", "them" if len(flags) > 1 else "it"

    said, ignored = [], ignored_options(o)
    if "lr" in ignored and (flags := given("lr", "epochs"))[0]:
        said.append(f"{flags[0]} {flags[1]} the run of --schedule epochs; --schedule bit takes its learning rate and length from "
                    f"the BiT-HyperRule (--budget-scale shortens it): leave {flags[2]} out, or train with --schedule epochs")
    if "budget_scale" in ignored and given("budget_scale")[0]:
        said.append("--budget-scale scales the BiT-HyperRule's image budget; --schedule epochs runs --epochs: leave it out, or "
                    "train with --schedule bit")
    if "head_lr" in ignored and (flags := given("head_epochs", "head_lr"))[0]:
        strategy = o.strategy or f"{default_strategy(o.schedule)} (--schedule {o.schedule}'s default)"
        said.append(f"{flags[0]} {flags[1]} the head stage of --strategy two-stage; --strategy {strategy} has none: leave "
                    f"{flags[2]} out, or train with --strategy two-stage")
    if "stability_sigma" in ignored and given("stability_sigma")[0]:
        said.append("--stability-sigma is the noise of the stability loss's noisy copy (--stability W > 0 with --stability-copy "
                    "noise): leave it out, or give those")
    if "recompress_codec" in ignored and given("recompress_codec")[0]:
        said.append("--recompress-codec chooses the codec of the lossy round trips of --recompress P > 0: leave it out, or give "
                    "--recompress P")
    return said


def check_output(out: Path, options: TrainOptions, saved: dict | None) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(out, "output path exists and is not a folder")
    tree = Path(options.data).resolve()
    if tree.is_dir() and (out.resolve() == tree or tree in out.resolve().parents):  # QA 65 #7: weights among the class folders
        raise InputError(out, f"the output folder is {'the image tree' if out.resolve() == tree else 'inside the image tree'} "
                              f"{tree}: its weights and checkpoint would mix with the class folders; choose a folder outside it")
    if not out.exists():
        check_creatable(out)
    if saved is None and is_finished(out):  # QA 65 #10: "use --resume to continue it" of a run with nothing left to do
        raise InputError(out, "output folder holds a finished training run (its weights: config.json, model.safetensors); "
                              "choose another folder to train again")
    if saved is None and (out / CHECKPOINT_DIR).exists():
        raise InputError(out, "output folder already holds a training run; use --resume to continue it or choose another folder")
    if saved is None and (out / "config.json").exists():  # e.g. shipped weights: never overwritten by a new run
        raise InputError(out, "output folder already holds a model (config.json, no checkpoint to resume); choose another folder")
    if saved is None and tool_output(out):  # QA 118 #4: new weights beside the metrics of another model (hard-cases reads them)
        raise InputError(out, "output folder holds the outputs of `triage eval --out` or `triage run` (metrics.json and "
                              "predictions.parquet, or run.json and frames.parquet): choose another folder")
    written = [name for name in FIRST_WRITES[1:] if saved is None and (out / name).exists()]
    if written:  # QA 56 #5: a folder of the user's own files: their train_log.csv was overwritten (rev52: another run's image list kept)
        raise InputError(out, f"output folder already holds {' and '.join(written)}, which training writes; choose another folder")
    if saved is not None:
        defaults = {f.name: f.default for f in fields(TrainOptions) if f.default is not MISSING}  # options newer than the checkpoint
        differ = sorted(k for k, v in recipe(options).items()
                        if saved["recipe"].get(k, defaults.get(k)) != v and not _same_source(k, saved["recipe"].get(k), v, saved))
        if differ:  # QA 75: named by field (['distill_loss']), without the values
            said = ", ".join(f"{option_flag(k)} {_shown(recipe(options)[k])} (the checkpoint's: {_shown(saved['recipe'].get(k, defaults.get(k)))})"
                             for k in differ)
            raise InputError(out, f"--resume with other options than the checkpoint's: {said}; rerun the same command")


def option_flag(field: str) -> str:
    """The `triage train` flag (or argument) that sets a :class:`TrainOptions` field."""
    named = {"data": "DATA", "class_names": "--classes", "abnormal_classes": "--abnormal", "weight_decay": "weight_decay (TrainOptions)"}
    return named.get(field, "--" + field.replace("_", "-"))  # (weight_decay: set through the library only, rev77)


def _shown(value) -> str:
    return "(not given)" if value in ("", None, []) else ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _same_source(key: str, before, now, saved: dict) -> bool:
    """QA 56 #3: the same data or init file given by another path (./data.csv after data.csv) is the same run. The data is
    compared by what it holds (data_sha256, images_sha256: train) where the checkpoint recorded it; an init file resolved."""
    if key == "data":
        return "data_sha256" in saved
    if key == "distill":  # the teacher given by another path: compared by its weights' digest (distill.load_teacher)
        return "distill_sha256" in saved and bool(before) and bool(now)
    return key == "init" and isinstance(before, str) and Path(before).is_file() and Path(before).resolve() == Path(now).resolve()


def check_threads(out: Path, options: TrainOptions, saved: dict) -> None:
    """QA 56 #2: a run resumed with another --threads was accepted, its weights then matching neither count."""
    config = out / "config.json"  # checkpoints before 2026-12-03 did not record it; the best model's provenance did
    before = saved.get("threads") or (read_json(config).get("provenance", {}).get("training", {}).get("threads") if config.is_file() else None)
    if before is not None and before != options.threads:
        raise InputError(out, f"--resume with --threads {options.threads}: the checkpoint was trained with --threads {before}, and "
                              f"float sums on the CPU (so the weights) depend on the thread count; rerun with --threads {before}")


def recipe(options: TrainOptions) -> dict:
    """The options that define a run (all but the runtime ones), JSON-ready."""
    data = asdict(options)
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items() if k not in RUNTIME_FIELDS}


def used_recipe(options: TrainOptions) -> dict:
    """:func:`recipe` without the options the chosen mode does not read (:func:`ignored_options`): the provenance's."""
    ignored = ignored_options(options)
    return {k: v for k, v in recipe(with_strategy(options)).items() if k not in ignored}


def ignored_options(o: TrainOptions) -> set[str]:
    """The options the chosen mode does not read (:func:`unused_options` refuses them when given): left out of the
    provenance's recipe (QA 98 #3: a BiT-HyperRule run's config.json recorded epochs 5 and lr 0.005 it never used)."""
    return {name for applies, names in ((o.schedule == "bit", ("lr", "epochs")), (o.schedule == "epochs", ("budget_scale",)),
                                        (with_strategy(o).strategy != "two-stage", ("head_epochs", "head_lr")),
                                        (not o.stability or o.stability_copy != "noise", ("stability_sigma",)),
                                        (not o.recompress, ("recompress_codec",)))
            if applies for name in names}


def make_config(options: TrainOptions, samples: list) -> ModelConfig:
    """The model description: classes from the data, preprocessing from timm's config for the arch."""
    if not timm.is_model(options.arch):
        raise WeightsError(options.arch, "unknown architecture (not a timm model)")
    labels = {s.label for s in samples if s.split in ("train", "val")}
    class_names = list(options.class_names or class_order(labels))
    if labels - set(class_names):
        missing = sorted(labels - set(class_names))
        commas = [m for m in missing if "," in m]  # QA 71 #4: --classes splits on commas, so such a name cannot be given there
        raise InputError(options.data, f"label(s) {missing} missing from class_names {class_names}" + (
            f" (--classes and --abnormal split on commas, so {commas[0]!r} cannot be named there: rename the class)" if commas else ""))
    if one := one_class_note(set(class_names)):
        raise InputError(options.data, one)
    tag = options.init[4:] if options.init.startswith("hub:") else options.arch
    cfg = timm.models.get_pretrained_cfg(tag) or timm.models.get_pretrained_cfg(options.arch)
    data = {"input_size": cfg.input_size[-1], "mean": cfg.mean, "std": cfg.std, "interpolation": cfg.interpolation} if cfg else {}
    data["interpolation"] = data.get("interpolation") if data.get("interpolation") in ("bilinear", "bicubic") else "bilinear"
    config = ModelConfig(
        architecture=options.arch, class_names=class_names, abnormal_classes=list(options.abnormal_classes or class_names[1:]),
        **{**data, "input_size": options.input_size or data.get("input_size", 224)},
        border=options.border, border_radius=options.border_radius, name=options.name or options.arch,
        provenance={"training": {"command": options.command, "recipe": used_recipe(options), "init": INIT_SOURCES.get(options.init, options.init),
                                 "data_counts": split_counts(samples), "torch": torch.__version__, "timm": timm.__version__, "threads": options.threads}},
    )
    config.validate("options")
    size = config.input_size
    if options.recompress > 0 and options.recompress_codec == "h264" and size % 2:  # helper-127 #5: refused after loading, unnamed
        raise InputError("options", f"--recompress with --recompress-codec h264 encodes frames at the model's input size {size}, "
                                    f"and H.264 at 4:2:0 needs even sides: give --input-size {size - 1} or {size + 1}, or "
                                    "--recompress-codec jpeg")
    return config

