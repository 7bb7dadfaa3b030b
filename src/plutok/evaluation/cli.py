"""``plutok eval``: score a model and/or baselines on a manifest or a folder of audio.

Wired into the ``plutok`` command through :func:`configure_parser` and :func:`run`;
also runnable as ``python -m plutok.evaluation``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

from plutok.errors import PlutokError

__all__ = ["configure_parser", "run", "main", "versions"]

VERSIONED = (
    "plutok",
    "torch",
    "numpy",
    "faster-whisper",
    "ctranslate2",
    "jiwer",
    "pesq",
    "pystoi",
    "resemblyzer",
    "speechmos",
    "onnxruntime",
    "matplotlib",
    "soxr",
    "tokenizers",
)


def versions() -> dict[str, str]:
    """Installed versions of the packages that affect the numbers (no imports)."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in VERSIONED:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``eval`` arguments to ``parser``."""
    from plutok.evaluation.baselines import BASELINE_NAMES
    from plutok.evaluation.runner import ALL_METRICS

    parser.add_argument(
        "data",
        help="manifest.jsonl (fields path, language, text; optional id, split, "
        "source, kind) or a folder of audio files with <name>.txt transcripts beside them",
    )
    parser.add_argument(
        "--model",
        metavar="DIR",
        help="model directory to evaluate, or 'default' for the "
        "bundled model (default: the bundled model when no --baselines are given)",
    )
    parser.add_argument(
        "--baselines",
        metavar="LIST",
        default="",
        help=f"comma-separated baselines or 'all': {','.join(BASELINE_NAMES)}",
    )
    parser.add_argument(
        "--search",
        action="store_true",
        help="encode the model's clips with code search (analysis by synthesis; system 'NAME+search')",
    )
    parser.add_argument(
        "--search-settings",
        metavar="K[,SWEEPS[,FIT]]",
        default=None,
        help="with --search: candidates per frame, sweeps, latent fit steps (default 8,2,25)",
    )
    parser.add_argument("--split", default=None, help="only manifest rows with this split (e.g. dev)")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="first N utterances only")
    parser.add_argument(
        "--kind",
        choices=["real", "synthetic"],
        default=None,
        help="only manifest rows of this kind of speech",
    )
    parser.add_argument(
        "--language", default=None, help="language of a folder's audio (manifests carry their own)"
    )
    parser.add_argument(
        "--out", default="eval-out", metavar="DIR", help="output directory (default: %(default)s)"
    )
    parser.add_argument(
        "--metrics", default=",".join(ALL_METRICS), help="comma-separated subset of %(default)s"
    )
    parser.add_argument(
        "--asr-cache",
        default=None,
        metavar="FILE",
        help="JSON cache of reference transcripts (default: ~/.cache/plutok/asr_references.json)",
    )
    parser.add_argument(
        "--keep-audio",
        type=int,
        default=3,
        metavar="N",
        help="decoded utterances saved per system under OUT/audio (default: %(default)s)",
    )
    parser.add_argument(
        "--untranscribed",
        choices=["skip", "asr"],
        default="skip",
        help="utterances without a transcript: no WER (skip), or scored against the ASR transcript "
        "of their reference audio (asr: the WER is then the dWER and the reference's WER is 0) "
        "(default: %(default)s)",
    )
    parser.add_argument("--no-resume", action="store_true", help="ignore partial results already in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _systems(args: argparse.Namespace) -> list[Any]:
    from plutok.evaluation.baselines import ModelSystem, parse_baselines

    systems: list[Any] = []
    model = args.model
    if model is None and not args.baselines:
        model = "default"
    tokenizer = None
    if model is not None:
        import plutok
        from plutok.cli.common import search_settings

        search = search_settings(args)
        tokenizer = plutok.Plutok.from_pretrained(None if model == "default" else model, search=search)
        name = "plutok" if model == "default" else f"plutok:{Path(model).name or model}"
        systems.append(ModelSystem(tokenizer, name + ("+search" if search else "")))
    systems += parse_baselines(args.baselines, tokenizer)
    return systems


def run(args: argparse.Namespace) -> int:
    """Run the evaluation described by ``args``; prints the summary table, returns the exit status."""
    from plutok.cli.common import UsageError
    from plutok.evaluation.report import _table, write_report
    from plutok.evaluation.runner import aggregate, evaluate, load_dataset

    try:
        if args.limit is not None and args.limit <= 0:
            raise PlutokError("--limit must be a positive number")
        metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
        utterances = load_dataset(args.data, args.split, args.limit, args.language, args.kind)
        systems = _systems(args)
        evaluation = evaluate(
            utterances,
            systems,
            args.out,
            metrics=metrics,
            asr_cache_path=args.asr_cache,
            resume=not args.no_resume,
            keep_audio=args.keep_audio,
            progress=not args.quiet,
            text_from_reference=args.untranscribed == "asr",
        )
        results = {
            "command": " ".join(shlex.quote(a) for a in getattr(args, "argv", None) or sys.argv),
            "data": str(args.data),
            "split": args.split,
            "versions": versions(),
            **evaluation,
        }
        results["aggregates"] = aggregate(evaluation)
        written = write_report(results, args.out)
    except (PlutokError, UsageError) as error:
        print(f"plutok eval: error: {error}", file=sys.stderr)
        return 1
    names = ["reference"] + [s["name"] for s in results["systems"]]
    print("\n".join(_table([(n, results["aggregates"][n]["all"]) for n in names])))
    print(f"\nwrote {written['json']} and {written['markdown']}")
    if results["errors"]:
        print(f"{len(results['errors'])} utterance(s) skipped; see report.md", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m plutok.evaluation``."""
    parser = argparse.ArgumentParser(prog="plutok eval", description=__doc__.splitlines()[0])
    configure_parser(parser)
    args = parser.parse_args(argv)
    args.argv = ["plutok", "eval", *(sys.argv[1:] if argv is None else argv)]
    return run(args)
