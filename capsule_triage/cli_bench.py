"""``triage bench`` and ``triage optimize`` (thin: parse, call, print)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import TriageError
from .run_options import MAX_BATCH_SIZE


def register(app: typer.Typer) -> None:
    from .cli import fail, printable
    from .cli_batch import EXIT_INTERRUPTED

    @app.command(short_help="Frames per second of each stage and end to end.")
    def bench(
        video: Annotated[Optional[Path], typer.Argument(metavar="VIDEO", readable=False, help="Video or frame folder to measure (default: the demo clip in tests/assets).")] = None,
        pipeline: Annotated[str, typer.Option("--pipeline", "-p", metavar="NAME|TOML", help="Preset name or TOML path.")] = "capsule-bleeding",
        weights: Annotated[Optional[str], typer.Option(metavar="WEIGHTS", help="Weights instead of the preset's.")] = None,
        device: Annotated[str, typer.Option(metavar="DEVICE", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N.")] = "auto",
        backend: Annotated[str, typer.Option(metavar="BACKEND", help="auto or a backend name (see triage run --help).")] = "auto",
        batch_size: Annotated[Optional[int], typer.Option(min=1, max=MAX_BATCH_SIZE, metavar="N", help="Frames decoded per batch (default: the preset's, rounded to a multiple of the run size `triage optimize` measured fastest, which the backend scores them in).")] = None,
        seconds: Annotated[float, typer.Option(min=0.1, help="Minimum measured time per stage. Decode-only and end to end also run the whole VIDEO once first (a warm-up) and at least once timed, so a long VIDEO takes at least four passes whatever this says.")] = 3.0,
        decode_in: Annotated[str, typer.Option(help="End to end, decode in a child 'process', a 'thread', or 'auto' (see triage run --help).")] = "auto",
        decoders: Annotated[int, typer.Option(min=1, metavar="N", help="End to end, decoder processes for the video (see triage run --help).")] = 1,
        as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    ) -> None:
        """Measure decode-only, preprocess, model-only and end-to-end frames/s on one input, in one run."""
        from .bench import bench as run_bench
        from .cli import warn_backend
        from .pipeline import load_classifier
        from .presets import load_pipeline, project_home
        from .versions import version_line

        try:
            preset = load_pipeline(pipeline)
            classifier = load_classifier(preset, weights=weights, device=device, backend=backend)
            warn_backend(classifier)
            demo = project_home() / "tests" / "assets" / "demo_capsule_4fps.mp4"
            if video is None and not demo.is_file():
                raise TriageError(demo, "no VIDEO given and the demo clip is not here (an installed wheel): give a VIDEO")
            result = run_bench(video or demo, preset, classifier,
                               batch_size=batch_size, min_seconds=seconds, decode_in=decode_in,
                               decoder_processes=decoders)
        except (TriageError, ValueError) as exc:
            fail(exc)
        except KeyboardInterrupt:  # QA 57 #4: exit 130 without a word
            typer.echo("Interrupted; nothing was measured (bench writes no file).", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        for warning in result["warnings"]:
            typer.echo(printable(f"Warning: {warning}"), err=True)
        if as_json:
            typer.echo(json.dumps(result, indent=2))
            return
        fps = result["fps"]
        threads = result["threads"]
        typer.echo(printable(f"Input {result['input']}" + (" (the 64-frame 224 px demo clip)"
                                                           if video is None else "")))
        typer.echo(f"{result['model']} on {result['device']} ({result['backend']}, {result['precision']}, read batch {result['batch_size']}, runs of {result['run_batch_size']}, "
                   f"{threads['streams']} stream(s) x {threads['inference'] or 'engine-chosen'} thread(s), {threads['decoder']} decoder thread(s) "
                   f"decoding in {'a thread' if result['decoded_in'] == 'thread' else str(result['decoder_processes']) + ' process(es)'})")
        if reason := (result.get("backend_selection") or {}).get("reason"):  # QA 76 #5: a tuning measured on another CPU was said in the JSON only
            typer.echo(printable(f"  backend: {reason}"))
        for stage in ("decode", "preprocess", "model", "end_to_end"):
            typer.echo(f"  {stage:<11} {fps[stage]:9.1f} frames/s")
        stages = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in result["stage_seconds"].items())
        typer.echo(f"  end to end without the per-study work {fps['scoring']:.1f} frames/s (last pass: {stages})")
        decoders = "" if result["decoder_peak_rss_mb"] is None else f" (decoder processes {result['decoder_peak_rss_mb']:.0f} MiB)"
        typer.echo(f"  peak RSS {result['peak_rss_mb']:.0f} MiB of decoding and end to end{decoders}; end-to-end cost = {result['cost_ratio']:.2f} x (decode + model); "
                   f"decode {100 * result['decode_share']:.0f}% of end to end")
        machine = result["machine"]  # QA 21: the console did not say what was measured with (the JSON did)
        bf16 = "native bf16" if machine["native_bf16"] else "no native bf16"  # QA 42: said only by a feature missing from the JSON's list
        int8 = "int8 dot products" if machine["int8_dot_product"] else "no int8 dot products"  # QA 60 #6: bf16 only was said
        typer.echo(printable(f"  {machine['cpus']} CPU(s) {machine['processor'] or ''}".rstrip() + f" ({bf16}, {int8}); "
                             + ", ".join(version_line() if name == "capsule-triage" else f"{name} {version}"
                                         for name, version in result["versions"].items() if version and name != "capsule-triage-commit")))

    @app.command(short_help="Export ONNX, check every backend, keep the fastest.")
    def optimize(
        weights: Annotated[Path, typer.Argument(metavar="WEIGHTS", readable=False, help="Weights folder (config.json + model.safetensors).")],
        check: Annotated[list[Path], typer.Option(metavar="PATH", help="Real clip(s) or frame folder(s) every backend must agree on with fp32 (repeatable). Include frames the model is unsure about: a check on frames it is sure of proves little.")],
        calibration: Annotated[Optional[list[Path]], typer.Option(metavar="PATH", help="Real clip(s) or frame folder(s) for int8 calibration, 128 frames each (default: the check clips).")] = None,
        tolerance: Annotated[float, typer.Option(min=0.0, max=1.0, help="Max accepted |score - fp32 score|.")] = 0.05,
        batch_size: Annotated[int, typer.Option(min=1, metavar="N", help="Batch size of the agreement check (speed is measured over --tune-batch-sizes).")] = 32,
        tune_batch_sizes: Annotated[Optional[str], typer.Option(help="Run sizes to time each backend at, comma-separated (default 1,2,4,8,16,32; a big model, e.g. BiT at 384 px, can skip 16 and 32: each takes minutes).")] = None,
        pipeline: Annotated[Optional[str], typer.Option("--pipeline", "-p", metavar="NAME|TOML", help="Preset whose event settings the 'events identical' check uses (name or .toml path; default: the preset whose weights these are, else capsule-bleeding).")] = None,
    ) -> None:
        """Export ONNX fp32/int8, check every backend against fp32 on real frames, time them; write backends.json."""
        from .optimize import TUNE_BATCH_SIZES, calibration_warning, load_warning, parse_sizes
        from .optimize import optimize as run_optimize
        from .presets import load_pipeline, preset_for_weights

        try:
            sizes = TUNE_BATCH_SIZES if tune_batch_sizes is None else parse_sizes(tune_batch_sizes)
            report = run_optimize(weights, check, calibration_clips=calibration, tolerance=tolerance, batch_size=batch_size,
                                  tune_batch_sizes=sizes, pipeline=load_pipeline(pipeline or preset_for_weights(weights)),
                                  progress=lambda line: typer.echo(printable(line)))
        except (TriageError, ValueError) as exc:
            fail(exc)
        except KeyboardInterrupt:
            typer.echo(f"Interrupted; {Path(weights) / 'backends.json'} is removed until `triage optimize` completes "
                       "(--backend auto uses torch-fp32 meanwhile).", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        for warning in (calibration_warning(report), load_warning(report)):
            if warning:
                typer.echo(printable(f"Warning: {warning}"), err=True)
        typer.echo(printable(f"Wrote {Path(weights) / 'backends.json'}"))
