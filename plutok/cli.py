"""The ``plutok`` command: one entry point, a subcommand per job, ``--help`` everywhere.

User mistakes (bad audio, foreign files, broken models) end in one line on stderr
and exit code 1; argparse usage errors exit 2; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from plutok import __version__

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def _model(args: argparse.Namespace):
    from plutok.tokenizer import Plutok

    chunk = getattr(args, "chunk_seconds", None)
    if chunk is not None and not chunk > 0:
        from plutok.errors import PlutokError

        raise PlutokError(f"--chunk-seconds must be positive, got {chunk}")
    return Plutok.from_pretrained(args.model, chunk_seconds=chunk or _default_chunk_seconds())


def _default_chunk_seconds() -> float:
    from plutok.tokenizer import DEFAULT_CHUNK_SECONDS

    return DEFAULT_CHUNK_SECONDS


def _add_model_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", metavar="DIR", default=None, help="model directory (default: the bundled default model)"
    )
    parser.add_argument(
        "--chunk-seconds",
        type=float,
        default=None,
        metavar="S",
        help="process long audio in chunks of S seconds; bounds memory, same tokens (default 30)",
    )


def _threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )


def _set_threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def _sample_path() -> Path:
    from plutok.tokenizer import default_model_path

    return default_model_path().parent / "sample.flac"


def _describe(encoding, output: Path | None = None) -> str:
    line = (
        f"{len(encoding.ids)} tokens for {encoding.duration:.2f} s: {encoding.tokens_per_second:.1f} tokens/s "
        f"({encoding.codes_per_second:.1f} codes/s)"
    )
    if encoding.silent:
        line += " [input is silent]"
    return line + (f" -> {output}" if output else "")


# -- encode / decode / roundtrip --------------------------------------------------------------
def _cmd_encode(args: argparse.Namespace) -> int:
    from plutok.audio import AUDIO_EXTENSIONS
    from plutok.errors import PlutokError

    tok = _model(args)
    inputs = [Path(path) for path in args.inputs]
    if len(inputs) == 1 and not inputs[0].is_dir():
        output = Path(args.output) if args.output else inputs[0].with_suffix(".plt")
        encoding = tok.encode_file(inputs[0])
        tok.save_plt(encoding, output)
        print(_describe(encoding, output))
        return 0
    # Many files or folders: OUT is a folder mirroring the inputs' names.
    files: list[tuple[Path, Path]] = []
    for source in inputs:
        if source.is_dir():
            for path in sorted(source.rglob("*")):
                if path.suffix.lower() in AUDIO_EXTENSIONS:
                    files.append((path, path.relative_to(source).with_suffix(".plt")))
        else:
            files.append((source, Path(source.name).with_suffix(".plt")))
    if not files:
        shown = ", ".join(str(path) for path in inputs)
        raise PlutokError(f"no audio files ({' '.join(AUDIO_EXTENSIONS)}) found in {shown}")
    if not args.output:
        raise PlutokError("several inputs need -o OUT_DIR")
    out_dir = Path(args.output)
    targets = dict(files)
    seen: dict[Path, Path] = {}
    for path, target in files:
        if target in seen:
            raise PlutokError(f"inputs {seen[target]} and {path} would both be written to {out_dir / target}")
        seen[target] = path
    failed = tokens = 0
    seconds = 0.0
    for path, result in tok.encode_files([path for path, _ in files], progress=not args.quiet):
        if isinstance(result, PlutokError):
            failed += 1
            print(f"plutok: skipped {path}: {result}", file=sys.stderr)
            continue
        tok.save_plt(result, out_dir / targets[path])
        tokens += len(result.ids)
        seconds += result.duration
    rate = tokens / seconds if seconds else 0.0
    print(f"{len(files) - failed} files, {seconds:.1f} s, {tokens} tokens, {rate:.1f} tokens/s -> {out_dir}")
    if failed:
        print(f"plutok: {failed} file(s) could not be encoded", file=sys.stderr)
    return EXIT_ERROR if failed else 0


def _cmd_decode(args: argparse.Namespace) -> int:
    from plutok.audio import write_audio

    tok = _model(args)
    encoding = tok.load_plt(args.input)
    wav, rate = tok.decode(encoding, sample_rate=args.sample_rate)
    output = Path(args.output) if args.output else Path(args.input).with_suffix(".wav")
    write_audio(output, wav, rate)
    print(f"{len(encoding.ids)} tokens -> {wav.shape[0] / rate:.2f} s at {rate} Hz -> {output}")
    return 0


def _cmd_roundtrip(args: argparse.Namespace) -> int:
    import time

    from plutok.audio import write_audio
    from plutok.errors import PlutokError

    if args.sample == (args.input is not None):
        raise PlutokError("give either an input file or --sample")
    source = _sample_path() if args.sample else Path(args.input)
    tok = _model(args)
    started = time.perf_counter()
    encoding = tok.encode_file(source)
    encoded = time.perf_counter()
    wav, rate = tok.decode(encoding, sample_rate=args.sample_rate)
    decoded = time.perf_counter()
    if args.plt:
        tok.save_plt(encoding, args.plt)
    output = write_audio(args.output, wav, rate)
    print(f"input: {source}" + (" [input is silent]" if encoding.silent else ""))
    print(f"tokens: {len(encoding.ids)}")
    print(f"tokens/s: {encoding.tokens_per_second:.1f}  (codes/s: {encoding.codes_per_second:.1f})")
    bits = len(encoding.ids) * tok.bits_per_token + tok.speaker_bits
    print(f"bitrate: {bits / encoding.duration:.0f} bits/s including the speaker vector")
    print(
        f"time: encode {encoded - started:.2f} s, decode {decoded - encoded:.2f} s for {encoding.duration:.2f} s"
    )
    print(f"output: {output}")
    return 0


# -- info ---------------------------------------------------------------------------------------
def _cmd_info(args: argparse.Namespace) -> int:
    target = Path(args.path) if args.path else None
    if target is not None and target.is_file() and target.suffix == ".plt":
        from plutok.container import read_plt

        plt = read_plt(target)
        duration = plt.num_samples / plt.sample_rate
        facts = {
            "file": str(target),
            "format": "plt v1",
            "model_fingerprint": plt.fingerprint.hex(),
            "sample_rate": plt.sample_rate,
            "num_samples": plt.num_samples,
            "duration_s": round(duration, 3),
            "tokens": len(plt.ids),
            "tokens_per_second": round(len(plt.ids) / duration, 2) if duration else 0.0,
            "speaker_dim": int(plt.speaker.shape[0]),
            "file_bytes": target.stat().st_size,
            "file_bits_per_second": round(8 * target.stat().st_size / duration, 1) if duration else 0.0,
        }
    else:
        from plutok.tokenizer import Plutok

        tok = Plutok.from_pretrained(target)
        facts = tok.info()
        facts["model"] = str(target) if target else "bundled default"
    if args.json:
        print(json.dumps(facts, indent=2))
    else:
        width = max(len(key) for key in facts)
        for key, value in facts.items():
            print(f"{key:<{width}}  {value}")
    return 0


# -- training -----------------------------------------------------------------------------------
def _cmd_extract(args: argparse.Namespace) -> int:
    import datetime
    from dataclasses import asdict

    from plutok import distributed
    from plutok.features import (
        ExtractSummary,
        extract_corpus,
        list_inputs,
        merge_failures,
        prepare_output,
        remove_partial_files,
    )

    backbone = _backbone_from_args(args)
    utterances = list_inputs(args.input, split=args.split)
    # Ranks finish at different times; the final barrier may wait long for the slowest one.
    with distributed.process_group("cpu", timeout=datetime.timedelta(days=7)) as ctx:
        if ctx.distributed:
            if ctx.is_writer:
                prepare_output(utterances, backbone, args.output, args.shard_size)
            distributed.barrier()  # no rank writes shards before extract.json exists
        summary = extract_corpus(
            utterances,
            backbone,
            args.output,
            shard_size=args.shard_size,
            rank=ctx.rank,
            world_size=ctx.world_size,
            progress=not args.quiet and ctx.is_writer,
            workers=args.workers,
        )
        # Gathering the summaries is also the barrier after which every shard is final.
        summaries = distributed.all_gather_objects(asdict(summary))
        if not ctx.is_writer:
            return 0
    total = ExtractSummary.total(ExtractSummary(**row) for row in summaries)
    failures = merge_failures(args.output)
    remove_partial_files(args.output)
    ranks = f" over {ctx.world_size} ranks" if ctx.distributed else ""
    print(
        f"processed {total.processed}, skipped {total.skipped} (done before), failed {total.failed}, "
        f"{total.hours:.3f} h of audio{ranks} -> {args.output}"
    )
    if failures:
        print(f"{len(failures)} input(s) failed; see {Path(args.output) / 'failures.jsonl'}", file=sys.stderr)
    return 0


def _backbone_from_args(args: argparse.Namespace):
    from plutok.backbones import get_backbone_class

    if args.backbone == "openvoice":
        if not args.checkpoint:
            from plutok.errors import PlutokError

            raise PlutokError(
                "--backbone openvoice needs --checkpoint DIR (converter config.json + checkpoint.pth)"
            )
        return get_backbone_class("openvoice").from_checkpoint(args.checkpoint)
    return get_backbone_class("mel")(speaker_coefficients=args.speaker_coefficients)


def _cmd_train_vq(args: argparse.Namespace) -> int:
    import numpy as np

    from plutok import distributed
    from plutok.errors import PlutokError
    from plutok.features import FeatureStore
    from plutok.files import atomic_write_text
    from plutok.training import TrainConfig, train_vqvae
    from plutok.vqvae import VQVAEConfig

    overrides = {
        name: getattr(args, name)
        for name in (
            "steps",
            "batch_size",
            "segment_frames",
            "learning_rate",
            "seed",
            "kmeans",
            "device",
            "precision",
            "checkpoint_interval",
            "eval_interval",
        )
        if getattr(args, name) is not None
    }
    try:
        train_config = TrainConfig(**overrides)
    except ValueError as error:
        raise PlutokError(str(error)) from None
    store = FeatureStore(args.features)
    store.require_complete()
    dev_store = FeatureStore(args.dev) if args.dev else store
    dev_store.require_complete()
    with distributed.process_group(train_config.device) as ctx:
        # Each rank holds its own part of the utterances in memory (float16, as stored).
        part = (ctx.rank, ctx.world_size)
        train = store.load_features(split=args.split, dtype=np.float16, part=part)
        dev = (
            dev_store.load_features(split=args.dev_split, dtype=np.float16, part=part)
            if (args.dev or args.dev_split)
            else []
        )
        if not train:
            where = f" for rank {ctx.rank} of {ctx.world_size}" if ctx.distributed else ""
            raise PlutokError(f"{args.features}: no training utterances{where} (split {args.split!r})")
        model_config = VQVAEConfig(
            feature_dim=int(store.config["feature_dim"]),
            codebook_size=args.codebook_size,
            downsample=args.downsample,
            channels=args.channels,
        )
        model, metrics = train_vqvae(
            train,
            dev,
            model_config,
            train_config,
            checkpoint_dir=Path(args.output) / "checkpoints",
            resume=args.resume,
            progress=not args.quiet,
        )
        if not ctx.is_writer:
            return 0
    model.save(args.output)
    metrics["codes_per_second"] = store.config["frames_per_second"] / model_config.downsample
    atomic_write_text(Path(args.output) / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    summary = {key: value for key, value in metrics.items() if key != "history"}
    print(json.dumps(summary, indent=2) if not args.quiet else f"trained VQ-VAE -> {args.output}")
    return 0


def _cmd_train_bpe(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from plutok import distributed
    from plutok.bpe import CodeBPE
    from plutok.features import FeatureStore
    from plutok.tokenizer import Plutok
    from plutok.vqvae import VQVAE

    if not distributed.env_context().is_writer:
        return 0  # single-process stage: under torchrun only rank 0 trains the BPE
    store = FeatureStore(args.features)
    store.require_complete()
    vqvae = VQVAE.load(args.vqvae)
    # Codes are computed and fed to the trainer one utterance at a time (one shard open at once).
    total = sum(1 for row in store.index_rows() if args.split is None or row.get("split") == args.split)

    def code_sequences():
        for _, features, _ in tqdm(
            store.iter_utterances(split=args.split), total=total, desc="codes", unit="utt", disable=args.quiet
        ):
            yield vqvae.encode(features)

    bpe = CodeBPE.train(
        code_sequences(), vqvae.codebook_size, vocab_size=args.vocab_size, progress=not args.quiet
    )
    metadata = {"description": args.description or "", "trained": {"features": str(args.features)}}
    model = Plutok.from_backbone(store.backbone(), vqvae, bpe, metadata=metadata)
    model.save(args.output)
    print(f"vocabulary {bpe.vocab_size} tokens over {vqvae.codebook_size} codes -> model {args.output}")
    return 0


# -- parser -------------------------------------------------------------------------------------
def _external(
    module: str,
) -> tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]:
    import importlib

    loaded = importlib.import_module(module)
    return loaded.configure_parser, loaded.run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plutok",
        description="Multilingual speech <-> very few discrete tokens. Run 'plutok COMMAND --help' for details.",
    )
    parser.add_argument("--version", action="version", version=f"plutok {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help_text: str, handler) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    sub = command("encode", "tokenize audio files into .plt files", _cmd_encode)
    sub.add_argument("inputs", nargs="+", metavar="IN", help="audio file(s) or folder(s)")
    sub.add_argument("-o", "--output", metavar="OUT", help="OUT.plt for one file, a folder for several")
    sub.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_model_option(sub)
    _threads_option(sub)

    sub = command("decode", "turn a .plt file back into speech", _cmd_decode)
    sub.add_argument("input", metavar="IN.plt")
    sub.add_argument("-o", "--output", metavar="OUT.wav", help="output audio (default IN.wav)")
    sub.add_argument("--sample-rate", type=int, default=None, help="output rate in Hz (default: the model's)")
    _add_model_option(sub)
    _threads_option(sub)

    sub = command("roundtrip", "tokenize and decode one file, report the token rate", _cmd_roundtrip)
    sub.add_argument("input", nargs="?", metavar="IN", help="audio file")
    sub.add_argument("--sample", action="store_true", help="use the speech sample bundled with plutok")
    sub.add_argument("-o", "--output", metavar="OUT.wav", required=True, help="decoded audio")
    sub.add_argument("--plt", metavar="OUT.plt", help="also keep the tokens as a .plt file")
    sub.add_argument("--sample-rate", type=int, default=None, help="output rate in Hz (default: the model's)")
    _add_model_option(sub)
    _threads_option(sub)

    sub = command("info", "facts about a model directory or a .plt file", _cmd_info)
    sub.add_argument("path", nargs="?", metavar="MODEL_DIR|FILE.plt", help="default: the bundled model")
    sub.add_argument("--json", action="store_true", help="print JSON")

    sub = command("extract", "extract backbone features of a corpus into resumable shards", _cmd_extract)
    sub.add_argument("input", metavar="IN", help="folder of audio files or manifest.jsonl")
    sub.add_argument("-o", "--output", metavar="OUT", required=True, help="extraction folder")
    sub.add_argument("--backbone", choices=["mel", "openvoice"], default="mel")
    sub.add_argument(
        "--checkpoint", metavar="DIR", help="OpenVoice converter folder (for --backbone openvoice)"
    )
    sub.add_argument(
        "--speaker-coefficients",
        type=int,
        default=None,
        help="mel backbone: DCT coefficients kept per speaker statistic (default: all 80)",
    )
    sub.add_argument("--split", default=None, help="only manifest rows of this split (e.g. train)")
    sub.add_argument("--shard-size", type=int, default=256, help="utterances per shard (default 256)")
    sub.add_argument(
        "--workers",
        type=int,
        default=1,
        help="local worker processes per rank, each taking whole shards (default 1); "
        "under torchrun every rank takes its own shards",
    )
    sub.add_argument("-q", "--quiet", action="store_true")
    _threads_option(sub)

    sub = command("train-vq", "train the VQ-VAE on extracted features", _cmd_train_vq)
    sub.add_argument("features", metavar="FEATURES", help="extraction folder from 'plutok extract'")
    sub.add_argument(
        "-o", "--output", metavar="OUT", required=True, help="VQ-VAE folder (weights, checkpoints)"
    )
    sub.add_argument("--split", default=None, help="training split in FEATURES (default: all)")
    sub.add_argument("--dev", metavar="DEV_FEATURES", help="held-out extraction folder")
    sub.add_argument("--dev-split", default=None, help="held-out split name (in --dev or FEATURES)")
    sub.add_argument("--codebook-size", type=int, default=256)
    sub.add_argument("--downsample", type=int, default=2, choices=[1, 2, 4], help="frames per code")
    sub.add_argument("--channels", type=int, default=None, help="network width (default: feature dim)")
    sub.add_argument("--steps", type=int, default=None)
    sub.add_argument(
        "--batch-size", type=int, default=None, help="segments per step and process (default 16)"
    )
    sub.add_argument("--segment-frames", type=int, default=None)
    sub.add_argument("--learning-rate", type=float, default=None)
    sub.add_argument("--seed", type=int, default=None)
    sub.add_argument(
        "--device",
        default=None,
        help="cpu or cuda (default cpu; under torchrun each rank uses GPU LOCAL_RANK)",
    )
    sub.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "fp16"],
        default=None,
        help="auto (default): bf16/fp16 autocast on CUDA, fp32 on CPU",
    )
    sub.add_argument(
        "--checkpoint-interval", type=int, default=None, help="steps between checkpoints (default 1000)"
    )
    sub.add_argument(
        "--eval-interval", type=int, default=None, help="steps between held-out evaluations (default 1000)"
    )
    sub.add_argument(
        "--kmeans", action="store_true", default=None, help="EMA k-means codebook (original style)"
    )
    sub.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in OUT")
    sub.add_argument("-q", "--quiet", action="store_true")
    _threads_option(sub)

    sub = command("train-bpe", "train the BPE vocabulary and write a complete model", _cmd_train_bpe)
    sub.add_argument("features", metavar="FEATURES", help="extraction folder from 'plutok extract'")
    sub.add_argument("--vqvae", metavar="VQ_DIR", required=True, help="folder written by 'plutok train-vq'")
    sub.add_argument("-o", "--output", metavar="MODEL_DIR", required=True)
    sub.add_argument("--vocab-size", type=int, default=12000)
    sub.add_argument("--split", default=None, help="only utterances of this split")
    sub.add_argument("--description", default=None, help="free text stored in the model's config")
    sub.add_argument("-q", "--quiet", action="store_true")
    _threads_option(sub)

    for name, module, help_text in (
        ("convert", "plutok.convert", "convert the original Plutok release into a model directory"),
        ("eval", "plutok.evaluation.cli", "measure quality and bitrate against classical codecs"),
        ("bench", "plutok.bench", "measure encode/decode speed and memory"),
        ("corpus", "plutok.corpus", "build the offline training corpus"),
    ):
        # These modules keep their heavy imports (whisper, matplotlib, ...) inside functions.
        configure, run = _external(module)
        sub = commands.add_parser(name, help=help_text, description=help_text)
        configure(sub)
        sub.set_defaults(handler=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    from plutok.errors import PlutokError

    try:
        _set_threads(args)
        return int(args.handler(args) or 0)
    except PlutokError as error:
        print(f"plutok: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("plutok: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_ERROR
    except OSError as error:  # unwritable output folder, full disk, -o naming a directory, ...
        where = f"{error.filename}: " if error.filename else ""
        print(f"plutok: error: {where}{error.strerror or error}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
