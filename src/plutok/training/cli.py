"""``plutok cache``, ``plutok train-codec`` and ``plutok assemble``: the v2 training stages from the command line.

Every setting is an option whose default is read from a dataclass field, so the CLI and
the library cannot drift: the schedule (:class:`~plutok.training.trainer.TrainerConfig`),
the content codec's heads and loss weights, and the settings of each registered codec
encoder and decoder (``--encoder-*``, ``--decoder-*``, from the part's settings class in
:mod:`plutok.registry`); ``--encoder`` / ``--decoder`` pick the parts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from pathlib import Path
from typing import Any

__all__ = [
    "add_dataclass_options",
    "configure_assemble",
    "configure_cache",
    "configure_train",
    "dataclass_values",
    "run_assemble",
    "run_cache",
    "run_train",
]

#: The frontend ``plutok cache`` runs by default: the Whisper member of the bundled default
#: model's frontend (float32: the same features, and so tokens, on every CPU).
CACHE_FRONTEND = {"name": "whisper-encoder", "compute_type": "float32"}


def add_dataclass_options(
    parser: argparse.ArgumentParser,
    cls: type,
    skip: tuple[str, ...] = (),
    prefix: str = "",
    note: str = "",
    taken: set[str] | None = None,
    aliases: dict[str, str] | None = None,
) -> None:
    """One ``--<prefix>field-name`` option per dataclass field (bool: ``--x/--no-x``; dict/list: JSON).

    ``note`` ends each help text; options already in ``taken`` (dests) are not added again;
    ``aliases``: ``{dest: another name}`` for options that keep an older name too.
    """
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        dest = prefix.replace("-", "_") + field.name
        if field.name in skip or (taken is not None and dest in taken):
            continue
        if taken is not None:
            taken.add(dest)
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()  # type: ignore[misc]
        flags = ["--" + dest.replace("_", "-")]
        if aliases and dest in aliases:
            flags.append("--" + aliases[dest].replace("_", "-"))
        kind = hints[field.name]
        if kind is bool:
            parser.add_argument(
                *flags,
                dest=dest,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"(default: {default}{note})",
            )
        elif isinstance(default, (dict, list)):
            parser.add_argument(
                *flags,
                dest=dest,
                type=json.loads,
                default=None,
                metavar="JSON",
                help=f"(default: {json.dumps(default)}{note})",
            )
        else:
            parse = type(default) if default is not None else _optional_int
            parser.add_argument(
                *flags, dest=dest, type=parse, default=None, help=f"(default: {default}{note})"
            )


def _optional_int(text: str) -> int | None:
    return None if text.lower() == "none" else int(text)


def dataclass_values(cls: type, args: argparse.Namespace, prefix: str = "") -> dict[str, Any]:
    """The options of :func:`add_dataclass_options` the user gave (others keep the dataclass default)."""
    values = {}
    for field in dataclasses.fields(cls):
        value = getattr(args, prefix.replace("-", "_") + field.name, None)
        if value is not None:
            values[field.name] = value
    return values


def configure_cache(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "manifest",
        metavar="CORPUS",
        help="a folder of audio files (about 5%% of them, chosen by a hash of the path, become the dev "
        "split) or a manifest.jsonl whose rows have 'path' and 'split' (plutok corpus build)",
    )
    parser.add_argument(
        "-o", "--output", required=True, help="cache folder (created; reruns add what is missing)"
    )
    parser.add_argument(
        "--frontend",
        type=json.loads,
        default=CACHE_FRONTEND,
        metavar="JSON",
        help=f"frontend config (default: {json.dumps(CACHE_FRONTEND)}, what the bundled default model reads "
        "besides the log-mel, which training derives from the cache)",
    )
    parser.add_argument(
        "--speaker",
        type=json.loads,
        default={"name": "mel-statistics", "coefficients": 16},
        metavar="JSON",
        help="speaker encoder config (default: mel statistics, 16 coefficients)",
    )
    parser.add_argument("--splits", nargs="+", default=["train", "dev"], help="manifest splits to cache")
    parser.add_argument(
        "--augment",
        default=None,
        metavar="KINDS",
        help="also cache augmented copies of the train rows: 'all' or a comma-separated list of "
        "pitch, formant, level-eq, reverb, noise, telephone, codec (1-2 per copy, seeded by clip id)",
    )
    parser.add_argument(
        "--augment-copies",
        type=int,
        default=1,
        metavar="N",
        help="augmented copies per train row (default: 1)",
    )
    parser.add_argument("--device", default="cpu", help="auto, cpu or cuda (default cpu)")
    parser.add_argument("-q", "--quiet", action="store_true")


def run_cache(args: argparse.Namespace) -> int:
    from plutok import registry
    from plutok.devices import resolve_device
    from plutok.errors import PlutokError
    from plutok.training.cache import DEV_FRACTION, fill_cache, folder_rows, iter_manifest

    if Path(args.manifest).is_dir():
        rows = [row for row in folder_rows(args.manifest) if row["split"] in args.splits]
        dev = sum(row["split"] == "dev" for row in rows)
        print(
            f"{args.manifest}: a folder without a manifest: {len(rows) - dev} train + {dev} dev clips "
            f"(dev: ~{DEV_FRACTION:.0%} of the files, chosen by a hash of their path)",
            file=sys.stderr,
        )
    else:
        rows = list(iter_manifest(args.manifest, args.splits))
    if not rows:
        raise PlutokError(f"{args.manifest}: no clip of split {' or '.join(args.splits)} to cache")
    frontend = registry.build("frontend", args.frontend).to(resolve_device(args.device))
    speaker = registry.build("speaker", args.speaker)
    if args.augment:
        from plutok.training.augment import augmented_copies, parse_kinds

        rows += augmented_copies(rows, parse_kinds(args.augment), args.augment_copies)
    counts = fill_cache(args.output, rows, frontend, speaker, progress=not args.quiet)
    print(json.dumps(counts))
    if not counts["added"] + counts["skipped"]:
        raise PlutokError(
            f"no clip could be cached; the reasons are in {Path(args.output) / 'failures.jsonl'}"
        )
    return 0


#: Options of the flat codec settings of the first v2 models, still accepted: each sets the
#: field of that name in every part (encoder, decoder, heads) that has it.
_SHARED_OPTIONS = {
    "channels": ("encoder", "decoder"),
    "kernel_size": ("encoder", "decoder", "heads"),
    "expansion": ("encoder", "decoder", "heads"),
    "upsampled_channels": ("decoder",),
    "upsampled_blocks": ("decoder",),
}
#: Old names of part options (the flat settings' names).
_ALIASES = {
    "encoder_frames_per_code": "analysis_frames_per_code",
    "decoder_frames_per_code": "synthesis_frames_per_code",
}
#: The codec parts with options of their own.
_PART_KINDS = ("encoder", "decoder")


def _part_argument(text: str) -> dict[str, Any]:
    """``--encoder``/``--decoder``: a registered name, or a JSON config section with a ``name``."""
    if text.lstrip().startswith("{"):
        value = json.loads(text)
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            raise argparse.ArgumentTypeError("a JSON part config needs a 'name'")
        return value
    return {"name": text}


def configure_train(parser: argparse.ArgumentParser) -> None:
    from plutok import registry
    from plutok.settings import (
        DERIVED_FIELDS,
        AdversarialSettings,
        ContentCodecSettings,
        ContentHeadSettings,
        ContentObjectiveSettings,
        TrainerConfig,
    )

    parser.add_argument("cache", help="feature cache folder (plutok cache)")
    parser.add_argument(
        "-o", "--output", required=True, help="run folder: checkpoints/, codec/, history.json"
    )
    parser.add_argument(
        "--codec", default=None, help="registered codec name (default: content, or --init-from's)"
    )
    for kind, default in (("encoder", "convnext"), ("decoder", "convnext-film")):
        parser.add_argument(
            f"--{kind}",
            type=_part_argument,
            default=None,
            metavar="NAME|JSON",
            help=f"the codec's {kind}: a registered {kind} name or its config as JSON (default: {default}, "
            f"or --init-from's); its settings are the --{kind}-* options",
        )
    parser.add_argument(
        "--quantizer",
        type=json.loads,
        default=None,
        metavar="JSON",
        help=f"the codec's quantizer config (default: {json.dumps(ContentCodecSettings().quantizer)})",
    )
    parser.add_argument(
        "--frontend",
        type=json.loads,
        default=None,
        metavar="JSON",
        help="the model's frontend when it is not the cache's: a 'stack' of the cache's frontend and "
        "its log-mel, derived from the cache (default: the cache's frontend)",
    )
    parser.add_argument(
        "--speaker",
        type=json.loads,
        default=None,
        metavar="JSON",
        help="the model's speaker encoder when it is not the cache's, derived from the cached vectors: "
        "'mel-statistics' with fewer coefficients, or "
        '\'{"name": "learned-mel", "coefficients": 16, "std_coefficients": 8, "learned_dim": 8}\' '
        "(statistics plus values a network learns with the decoder; 32 values = 512 bits) "
        "(default: the cache's encoder)",
    )
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in OUT")
    parser.add_argument(
        "--init-from",
        metavar="DIR|NAME",
        help="start from the weights of this codec or model folder, or bundled model (default or fast), "
        "instead of a fresh codec; its architecture, frontend and loss weights are the defaults "
        "(options may change the loss weights, grow the decoder or change the number of codes)",
    )
    parser.add_argument(
        "--freeze-codes",
        action="store_true",
        help="with --init-from: train only the decoder side, so the codes and token ids keep their meaning",
    )
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--dev-split", default="dev")
    shared = parser.add_argument_group(
        "settings shared by the parts that have them (the first v2 codec's names)"
    )
    for name in _SHARED_OPTIONS:
        default = getattr(ContentCodecSettings(), name)
        shared.add_argument(
            f"--{name.replace('_', '-')}", type=int, default=None, help=f"(default: {default})"
        )
    for kind in _PART_KINDS:
        group = parser.add_argument_group(f"{kind} settings (of the --{kind} part)")
        taken: set[str] = set()
        for name, settings in registry.option_settings(kind).items():
            add_dataclass_options(
                group,
                settings,
                skip=DERIVED_FIELDS,
                prefix=f"{kind}-",
                note=f"; {name}",
                taken=taken,
                aliases=_ALIASES,
            )
    group = parser.add_argument_group("content heads (training only)")
    add_dataclass_options(group, ContentHeadSettings, skip=("kernel_size", "expansion", "phoneme_symbols"))
    group = parser.add_argument_group("loss weights (recorded in the codec's config)")
    add_dataclass_options(group, ContentObjectiveSettings)
    group = parser.add_argument_group(
        "adversarial term (training only: a log-mel patch discriminator beside the codec; "
        "on when --adversarial-weight > 0)"
    )
    add_dataclass_options(group, AdversarialSettings, prefix="adversarial-", skip=("weight",))
    group.add_argument(
        "--adversarial-weight",
        dest="adversarial_weight",
        type=float,
        default=None,
        help=f"weight of the generator term; 0 turns the term off (default: {AdversarialSettings().weight})",
    )
    group = parser.add_argument_group("schedule")
    add_dataclass_options(group, TrainerConfig)


#: The parts a ``content`` codec has unless told otherwise.
_DEFAULT_PARTS = {"encoder": "convnext", "decoder": "convnext-film"}


def codec_config_from_args(args: argparse.Namespace, defaults: bool = True) -> dict[str, Any]:
    """The codec config ``train-codec``'s options describe: the parts' sections, heads, loss weights.

    ``defaults``: fill in the default codec, parts and quantizer; without (a run started
    from a saved codec, whose own are the defaults) only what the options give.

    Raises:
        ModelError: an option of a part the codec does not have.
    """
    from plutok.errors import ModelError
    from plutok.settings import ContentCodecSettings, ContentHeadSettings, ContentObjectiveSettings

    sections: dict[str, dict[str, Any]] = {}
    for kind in _PART_KINDS:
        section = dict(getattr(args, kind) or {})
        if defaults:
            section.setdefault("name", _DEFAULT_PARTS[kind])
        sections[kind] = section
    heads = dataclass_values(ContentHeadSettings, args)
    for kind in _PART_KINDS:
        name = sections[kind].get("name")
        # Without a name (a saved codec's part), the saved part checks its settings when built.
        fields = _setting_fields(kind, name) if name else None
        for key, value in vars(args).items():
            if not key.startswith(f"{kind}_") or value is None:
                continue
            field = key[len(kind) + 1 :]
            if fields is not None and field not in fields:
                raise ModelError(f"--{key.replace('_', '-')}: the {kind} {name!r} has no setting {field!r}")
            sections[kind][field] = value
    for option, owners in _SHARED_OPTIONS.items():
        value = getattr(args, option, None)
        if value is None:
            continue
        used = False
        for owner in owners:
            if owner == "heads":
                heads.setdefault(option, value)
                used = True
                continue
            name = sections[owner].get("name", _DEFAULT_PARTS[owner])
            if option in _setting_fields(owner, name):
                sections[owner].setdefault(option, value)
                used = True
        if not used:
            raise ModelError(f"--{option.replace('_', '-')}: no part of this codec has that setting")
    config: dict[str, Any] = {
        key: value
        for key, value in (
            ("encoder", sections["encoder"]),
            ("decoder", sections["decoder"]),
            ("heads", heads),
            ("objective", dataclass_values(ContentObjectiveSettings, args)),
        )
        if value or defaults
    }
    if args.codec or defaults:
        config["name"] = args.codec or "content"
    if args.quantizer is not None or defaults:
        config["quantizer"] = (
            args.quantizer if args.quantizer is not None else ContentCodecSettings().quantizer
        )
    return config


def _setting_fields(kind: str, name: str) -> set[str]:
    from plutok import registry

    settings = registry.settings_class(kind, name)
    return {field.name for field in dataclasses.fields(settings)} if settings else set()


def run_train(args: argparse.Namespace) -> int:
    from plutok import distributed
    from plutok.settings import AdversarialSettings, TrainerConfig
    from plutok.training.codec import train_codec

    trainer = TrainerConfig(**dataclass_values(TrainerConfig, args))
    adversarial = AdversarialSettings(**dataclass_values(AdversarialSettings, args, prefix="adversarial-"))
    codec_config = codec_config_from_args(args, defaults=not args.init_from)
    frontend = args.frontend
    if args.init_from:
        from plutok.cli.common import UsageError
        from plutok.training.codec import ArchitectureConflict, starting_point

        try:
            start = starting_point(args.init_from, codec_config, frontend)
        except ArchitectureConflict as error:
            raise UsageError(str(error)) from None
        codec_config = start.codec
        frontend = frontend or start.frontend
    # Under torchrun: one process group for the run (gloo on CPU, NCCL with --device cuda).
    with distributed.process_group(trainer.device) as ctx:
        _, metrics = train_codec(
            args.cache,
            args.output,
            codec_config,
            trainer,
            resume=args.resume,
            train_split=args.train_split,
            dev_split=args.dev_split,
            frontend_config=frontend,
            init_from=args.init_from,
            freeze_codes=args.freeze_codes,
            adversarial=adversarial,
            speaker_config=args.speaker,
        )
    if ctx.is_writer:
        print(json.dumps({"final": metrics, "codec": str(Path(args.output) / "codec")}))
    return 0


def configure_assemble(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cache", help="feature cache folder (plutok cache): the BPE is trained on its codes")
    parser.add_argument("codec", help="trained codec folder (RUN/codec of plutok train-codec)")
    parser.add_argument("-o", "--output", required=True, metavar="MODEL_DIR", help="model folder to write")
    parser.add_argument(
        "--vocab-size",
        type=int,
        default=12000,
        help="tokens in the vocabulary, codes included (default: %(default)s); above the codebook size. "
        "On little audio the BPE may stop earlier: a warning then gives the size reached",
    )
    parser.add_argument(
        "--split", default="train", help="cache split whose codes train the BPE (default: train)"
    )
    parser.add_argument("--description", default="", help="free text stored in the model's config")
    parser.add_argument(
        "--trained", type=json.loads, default={}, metavar="JSON", help="facts about training for config.json"
    )
    parser.add_argument(
        "--decoder-for",
        metavar="MODEL",
        help="keep this model's codes and BPE and swap in the codec's decoder (no BPE training; "
        "a codec of train-codec --init-from MODEL --freeze-codes)",
    )
    parser.add_argument(
        "--bpe-from",
        metavar="MODEL",
        help="keep this model's BPE and default voice instead of training a BPE on CACHE "
        "(a codec of train-codec --init-from MODEL whose codes moved; same codebook size); a run "
        "trained with its own --speaker keeps its speaker encoder and default voice",
    )
    parser.add_argument("-q", "--quiet", action="store_true")


def run_assemble(args: argparse.Namespace) -> int:
    from plutok.training.assemble import assemble_model, replace_decoder, vocab_shortfall

    if args.decoder_for:
        metadata: dict[str, Any] = {"description": args.description} if args.description else {}
        if args.trained:
            metadata["trained"] = args.trained
        model = replace_decoder(args.decoder_for, args.codec, args.output, metadata)
        print(json.dumps({"model": args.output, "fingerprint": model.fingerprint}))
        return 0
    model = assemble_model(
        args.cache,
        args.codec,
        args.output,
        args.vocab_size,
        metadata={"description": args.description, "trained": args.trained},
        split=args.split,
        progress=not args.quiet,
        bpe_from=args.bpe_from,
    )
    warning = None if args.bpe_from else vocab_shortfall(args.vocab_size, model.vocab_size)
    if warning:
        print(f"plutok: warning: {warning}", file=sys.stderr)
    print(
        json.dumps({"model": args.output, "vocab_size": model.vocab_size, "fingerprint": model.fingerprint})
    )
    return 0


def configure_vocoder_teacher(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cache", help="feature cache folder (plutok cache): its log-mels are the input")
    parser.add_argument(
        "-o", "--output", required=True, help="teacher set folder (reruns add what is missing)"
    )
    parser.add_argument("--real-hours", type=float, default=0.7, help="hours of real speech (default 0.7)")
    parser.add_argument(
        "--other-hours", type=float, default=0.3, help="hours of synthetic speech (default 0.3)"
    )
    parser.add_argument("--split", default="train")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-q", "--quiet", action="store_true")


def run_vocoder_teacher(args: argparse.Namespace) -> int:
    from plutok.training.vocoder import build_teacher_set

    summary = build_teacher_set(
        args.cache, args.output, args.real_hours, args.other_hours, args.split, args.seed, not args.quiet
    )
    print(json.dumps(summary))
    return 0


def configure_train_vocoder(parser: argparse.ArgumentParser) -> None:
    from plutok.settings import ISTFTVocoderSettings, TrainerConfig

    parser.add_argument("teacher", help="teacher set folder (plutok vocoder-teacher)")
    parser.add_argument(
        "-o", "--output", required=True, help="run folder: checkpoints/, vocoder/, history.json"
    )
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in OUT")
    parser.add_argument(
        "--model",
        help="also save a copy of this model (a directory, or 'default') with the new vocoder to --model-output",
    )
    parser.add_argument("--model-output", help="where --model's copy goes")
    group = parser.add_argument_group("vocoder settings")
    add_dataclass_options(group, ISTFTVocoderSettings)
    group = parser.add_argument_group("schedule (--segment-codes is the crop length in frames)")
    # The teacher set fixes the vocoder's data mix (vocoder-teacher --real-hours).
    add_dataclass_options(group, TrainerConfig, skip=("real_weight",))


def run_train_vocoder(args: argparse.Namespace) -> int:
    from plutok.errors import PlutokError
    from plutok.settings import ISTFTVocoderSettings, TrainerConfig
    from plutok.training.vocoder import VOCODER_DIR, train_vocoder

    if args.model and not args.model_output:
        raise PlutokError("--model needs --model-output (where the model with the new vocoder goes)")
    trainer = TrainerConfig(**dataclass_values(TrainerConfig, args))
    settings = ISTFTVocoderSettings(**dataclass_values(ISTFTVocoderSettings, args))
    _, metrics = train_vocoder(args.teacher, args.output, settings, trainer, resume=args.resume)
    result: dict[str, Any] = {"final": metrics, "vocoder": str(Path(args.output) / VOCODER_DIR)}
    if args.model:
        from plutok.training.assemble import replace_vocoder

        model_dir = None if args.model == "default" else args.model
        model = replace_vocoder(model_dir, Path(args.output) / VOCODER_DIR, args.model_output)
        result["model"] = {"path": args.model_output, "fingerprint": model.fingerprint}
    print(json.dumps(result))
    return 0


def configure_parser(parser: argparse.ArgumentParser) -> None:  # pragma: no cover - unused entry
    configure_train(parser)
