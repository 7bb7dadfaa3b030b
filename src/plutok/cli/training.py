"""Training commands: ``extract``, ``train-vq``, ``train-bpe`` (v1); ``cache``, ``train-codec``, ``assemble`` (v2);
``vocoder-teacher``, ``train-vocoder`` (the fast vocoder).

The v2 stages live in :mod:`plutok.training.cli`; this module only registers them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from plutok.cli.common import add_threads_option

Command = Callable[[str, str, Callable[[argparse.Namespace], int]], argparse.ArgumentParser]


def register(command: Command) -> None:
    """Add the training subcommands through ``command(name, help, handler)``."""
    sub = command("extract", "extract backbone features of a corpus into resumable shards", run_extract)
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
    add_threads_option(sub)

    sub = command("train-vq", "train the VQ-VAE on extracted features", run_train_vq)
    sub.add_argument("features", metavar="FEATURES", help="extraction folder from 'plutok extract'")
    sub.add_argument(
        "-o", "--output", metavar="OUT", required=True, help="VQ-VAE folder (weights, checkpoints)"
    )
    sub.add_argument("--split", default=None, help="training split in FEATURES (default: all)")
    sub.add_argument("--dev", metavar="DEV_FEATURES", help="held-out extraction folder")
    sub.add_argument("--dev-split", default=None, help="held-out split name (in --dev or FEATURES)")
    # VQ-VAE architecture: defaults from the VQVAEConfig fields, so CLI and library cannot drift.
    from plutok.settings import VQVAEConfig

    defaults = VQVAEConfig(feature_dim=1)
    sub.add_argument(
        "--codebook-size", type=int, default=defaults.codebook_size, help="(default: %(default)s)"
    )
    sub.add_argument(
        "--downsample",
        type=int,
        default=defaults.downsample,
        choices=[1, 2, 4],
        help="frames per code (default: %(default)s)",
    )
    sub.add_argument(
        "--channels", type=int, default=defaults.channels, help="network width (default: feature dim)"
    )
    sub.add_argument(
        "--latent-dim",
        type=int,
        default=defaults.latent_dim,
        help="factorised codes of this dimension (default: off)",
    )
    sub.add_argument(
        "--normalize-latents",
        action=argparse.BooleanOptionalAction,
        default=defaults.normalize_latents,
        help="L2-normalise the encoder output before quantizing (default: %(default)s)",
    )
    # The number is TrainConfig.steps (a test checks it): importing it here would load torch at start-up.
    sub.add_argument(
        "--steps",
        type=int,
        default=None,
        help="optimiser steps (default 20000: ~2 s a step on a busy 2-core CPU with the "
        "default model and batch, so ~11 h; the progress bar shows the time left)",
    )
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
    # --*-interval: the names of 0.6 and earlier, kept so existing scripts still run.
    sub.add_argument(
        "--checkpoint-every",
        "--checkpoint-interval",
        type=int,
        default=None,
        help="steps between checkpoints (default 1000)",
    )
    sub.add_argument(
        "--eval-every",
        "--eval-interval",
        type=int,
        default=None,
        help="steps between held-out evaluations (default 1000)",
    )
    sub.add_argument(
        "--kmeans", action="store_true", default=None, help="EMA k-means codebook (original style)"
    )
    sub.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in OUT")
    sub.add_argument("-q", "--quiet", action="store_true")
    add_threads_option(sub)

    sub = command("train-bpe", "train the BPE vocabulary and write a complete model", run_train_bpe)
    sub.add_argument("features", metavar="FEATURES", help="extraction folder from 'plutok extract'")
    sub.add_argument("--vqvae", metavar="VQ_DIR", required=True, help="folder written by 'plutok train-vq'")
    sub.add_argument("-o", "--output", metavar="MODEL_DIR", required=True)
    sub.add_argument(
        "--vocab-size",
        type=int,
        default=12000,
        help="tokens in the vocabulary, codes included (default: %(default)s); above the codebook size. "
        "On little audio the BPE may stop earlier: a warning then gives the size reached",
    )
    sub.add_argument("--split", default=None, help="only utterances of this split")
    sub.add_argument("--description", default=None, help="free text stored in the model's config")
    sub.add_argument("-q", "--quiet", action="store_true")
    add_threads_option(sub)

    from plutok.training import cli as training_cli

    sub = command(
        "cache", "cache frontend features + log-mel of a corpus for codec training", training_cli.run_cache
    )
    training_cli.configure_cache(sub)
    add_threads_option(sub)
    sub = command(
        "train-codec", "train a v2 codec (content features -> codes -> log-mel)", training_cli.run_train
    )
    training_cli.configure_train(sub)
    add_threads_option(sub)
    sub = command(
        "assemble",
        "train the BPE on a trained codec's codes and write a complete model directory",
        training_cli.run_assemble,
    )
    training_cli.configure_assemble(sub)
    add_threads_option(sub)
    sub = command(
        "vocoder-teacher",
        "run the packaged HiFi-GAN over cached log-mels: targets for train-vocoder",
        training_cli.run_vocoder_teacher,
    )
    training_cli.configure_vocoder_teacher(sub)
    add_threads_option(sub)
    sub = command(
        "train-vocoder",
        "train the fast iSTFT vocoder on a teacher set (and put it into a model with --model)",
        training_cli.run_train_vocoder,
    )
    training_cli.configure_train_vocoder(sub)
    add_threads_option(sub)


def run_extract(args: argparse.Namespace) -> int:
    import datetime
    from dataclasses import asdict

    from plutok import distributed
    from plutok.legacy.features import (
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
    from plutok.legacy.backbones import get_backbone_class

    if args.backbone == "openvoice":
        if not args.checkpoint:
            from plutok.errors import PlutokError

            raise PlutokError(
                "--backbone openvoice needs --checkpoint DIR (converter config.json + checkpoint.pth)"
            )
        return get_backbone_class("openvoice").from_checkpoint(args.checkpoint)
    return get_backbone_class("mel")(speaker_coefficients=args.speaker_coefficients)


def run_train_vq(args: argparse.Namespace) -> int:
    import numpy as np

    from plutok import distributed
    from plutok.errors import PlutokError
    from plutok.files import atomic_write_text
    from plutok.legacy.features import FeatureStore
    from plutok.legacy.training import TrainConfig, train_vqvae
    from plutok.settings import VQVAEConfig

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
            "checkpoint_every",
            "eval_every",
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
            latent_dim=args.latent_dim,
            normalize_latents=args.normalize_latents,
        )
        model, metrics = train_vqvae(
            train,
            dev,
            model_config,
            train_config,
            checkpoint_dir=args.output,
            resume=args.resume,
            progress=not args.quiet,
        )
        if not ctx.is_writer:
            return 0
    metrics["codes_per_second"] = store.config["frames_per_second"] / model_config.downsample
    atomic_write_text(Path(args.output) / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    summary = {key: value for key, value in metrics.items() if key != "history"}
    print(json.dumps(summary, indent=2) if not args.quiet else f"trained VQ-VAE -> {args.output}")
    return 0


def run_train_bpe(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from plutok import distributed
    from plutok.bpe import CodeBPE
    from plutok.legacy.features import FeatureStore
    from plutok.legacy.vqvae import VQVAE
    from plutok.tokenizer import Plutok
    from plutok.training.assemble import check_vocab_size, vocab_shortfall

    if not distributed.env_context().is_writer:
        return 0  # single-process stage: under torchrun only rank 0 trains the BPE
    store = FeatureStore(args.features)
    store.require_complete()
    vqvae = VQVAE.load(args.vqvae)
    # Codes are computed and fed to the trainer one utterance at a time (one shard open at once).
    check_vocab_size(args.vocab_size, vqvae.codebook_size)
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
    warning = vocab_shortfall(args.vocab_size, bpe.vocab_size)
    if warning:
        print(f"plutok: warning: {warning}", file=sys.stderr)
    print(f"vocabulary {bpe.vocab_size} tokens over {vqvae.codebook_size} codes -> model {args.output}")
    return 0
