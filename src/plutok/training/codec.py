"""Train a codec on a feature cache: ``plutok train-codec CACHE -o RUN`` (see docs/training.md)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from plutok import distributed, registry
from plutok.codec.base import Codec
from plutok.codec.encoders.base import CodecEncoder
from plutok.errors import ModelError
from plutok.files import atomic_write_text
from plutok.settings import AdversarialSettings
from plutok.speaker.learned import LearnedMelSpeaker
from plutok.training.adversarial import AdversarialObjective
from plutok.training.cache import AnalysisReader, CachedUtterance, FeatureCache
from plutok.training.data import SegmentBatcher
from plutok.training.objectives import ContentCodecObjective, Objective, VQVAECodecObjective
from plutok.training.phonemes import PhonemeInventory, phoneme_labels
from plutok.training.speaker import (
    UTTERANCE_FRAMES,
    LearnedSpeakerObjective,
    cached_vector_map,
    learned_vectors,
    standardize_learned,
)
from plutok.training.trainer import Callback, Trainer, TrainerConfig, seed_everything
from plutok.weights import describe_mismatch, read_weights, round_to_half

__all__ = [
    "ArchitectureConflict",
    "CODEBOOK_KEY",
    "CODEC_DIR",
    "StartingPoint",
    "code_state_dict",
    "freeze_code_weights",
    "start_from",
    "starting_point",
    "train_codec",
]

CODEC_DIR = "codec"
#: The codebook's key; :func:`start_from` may give a codec a codebook of another size.
CODEBOOK_KEY = "quantizer.codebook"
#: Blocks :func:`start_from` may add to the saved ``convnext-film`` decoder of a codec
#: (names as in the weight file).
_GROWABLE = re.compile(r"^(decoder|upsampled)\.blocks\.\d+\.")
_GROWABLE_DECODER = "convnext-film"
#: The modules of the CTC phoneme head (``ctc_weight`` > 0).
_PHONEME_HEAD = ("phoneme_in.", "phoneme.", "to_phonemes.")

#: Codec settings a run started from a saved codec may set to other values: the loss
#: weights, and the sizes :func:`start_from` can grow.
_FREE_SETTINGS = (
    "content_weight",
    "gradient_weight",
    "envelope_weight",
    "band_envelope_weight",
    "ctc_weight",
)
_GROWABLE_SETTINGS = ("decoder_blocks", "upsampled_blocks")
#: Quantizer keys that shape the saved weights (``codebook_size`` may change: k-means starts it).
_QUANTIZER_SHAPE = ("name", "dim")
#: Fixed by the cache and the model's parts, not by the run's settings.
_DERIVED_SETTINGS = ("input_dim", "output_dim", "speaker_dim", "weights_sha256")


class ArchitectureConflict(ModelError):
    """A setting given for a run started from a saved codec contradicts that codec's architecture."""


@dataclass(frozen=True)
class StartingPoint:
    """What ``--init-from`` reads: the folder with ``codec.safetensors`` and the saved architecture.

    ``codec``: the saved codec config with the settings given for this run laid over it;
    ``frontend`` / ``speaker``: the saved parts' configs (``None`` when the folder has none).
    """

    directory: Path
    codec: dict[str, Any]
    frontend: dict[str, Any] | None
    speaker: dict[str, Any] | None


def resolve_model_folder(name: str | os.PathLike) -> Path:
    """A codec, run or model folder, or a bundled model's name (``default``, ``fast``): the folder with its codec."""
    from plutok.catalog import BUNDLED_MODELS, DERIVED_MODELS, bundled_model_names
    from plutok.model_directory import bundled_model_path

    path = Path(name)
    if path.exists():
        # A run folder: its trained codec is in codec/.
        has_codec = not (path / "config.json").is_file() and (path / CODEC_DIR / "config.json").is_file()
        return path / CODEC_DIR if has_codec else path
    text = str(name)
    if text in DERIVED_MODELS:  # a bundled model with another vocoder: the codec is its base's
        text = DERIVED_MODELS[text][0]
    if text in BUNDLED_MODELS:
        return bundled_model_path(text)
    raise ModelError(f"{name}: no such folder, nor a bundled model ({', '.join(bundled_model_names())})")


def starting_point(
    init_from: str | os.PathLike, given: dict[str, Any], frontend: dict[str, Any] | None = None
) -> StartingPoint:
    """The architecture of the codec ``init_from`` names, with the settings ``given`` for this run.

    Settings not given are the saved codec's (its loss weights too), so a run from a
    saved codec or a bundled model needs no architecture options. Given settings may
    change the loss weights, grow the decoder (more ``decoder_blocks`` /
    ``upsampled_blocks``), and change the quantizer's ``codebook_size`` and upkeep
    settings; anything else that differs from the saved codec, and a ``frontend`` other
    than the saved one, raises :class:`ArchitectureConflict`. A frontend that differs only
    in numeric precision (``compute_type``: the same features, rounded differently) is
    allowed: training on adapts the codec to it (how the float32 default was made from the
    int8 one).
    """
    directory = resolve_model_folder(init_from)
    config_path = directory / "config.json"
    try:
        saved = json.loads(config_path.read_text(encoding="utf-8"))
        codec = {k: v for k, v in saved["codec"].items() if k not in _DERIVED_SETTINGS}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ModelError(f"{config_path}: not the config of a v2 codec or model ({error!r})") from None
    if any(key in given for key in _PART_SECTIONS):
        flat = _flat_given(given)
        if flat is None or any(key in codec for key in _PART_SECTIONS):
            codec = _merged_parts(init_from, codec, given)
            given = {}
        else:
            given = flat
    for key, value in given.items():
        old = codec.get(key)
        if key == "name" and value != old:
            raise ArchitectureConflict(f"--codec {value} contradicts {init_from}, a {old!r} codec")
        if key == "quantizer" and isinstance(value, dict) and isinstance(old, dict):
            clash = [k for k in _QUANTIZER_SHAPE if k in value and value[k] != old.get(k)]
            if clash:
                shown = ", ".join(f"{k} {old.get(k)!r}" for k in clash)
                raise ArchitectureConflict(f"--quantizer contradicts {init_from}'s quantizer ({shown})")
            codec["quantizer"] = {**old, **value}
            continue
        if key in _GROWABLE_SETTINGS and old is not None and value < old:
            flag = "--" + key.replace("_", "-")
            raise ArchitectureConflict(
                f"{flag} {value} is below {init_from}'s {old}: a decoder can grow, not shrink"
            )
        if key not in _FREE_SETTINGS + _GROWABLE_SETTINGS and old is not None and value != old:
            flag = "--" + key.replace("_", "-")
            raise ArchitectureConflict(
                f"{flag} {json.dumps(value)} contradicts {init_from} ({key} {json.dumps(old)}); leave it out"
            )
        codec[key] = value
    saved_frontend = _without_digest(saved.get("frontend"))
    if (
        frontend is not None
        and saved_frontend is not None
        and _without_precision(_built(frontend)) != _without_precision(_built(saved_frontend))
    ):
        raise ArchitectureConflict(
            f"--frontend contradicts {init_from}'s frontend {json.dumps(saved_frontend)}"
        )
    return StartingPoint(directory, codec, saved_frontend, _without_digest(saved.get("speaker")))


def _without_precision(config: Any) -> Any:
    """A frontend config without its ``compute_type`` settings, at every depth."""
    if isinstance(config, dict):
        return {k: _without_precision(v) for k, v in config.items() if k != "compute_type"}
    if isinstance(config, list):
        return [_without_precision(v) for v in config]
    return config


#: The sections of a codec config in the parts' form.
_PART_SECTIONS = ("encoder", "decoder", "heads", "objective")
#: The flat settings' names of the ``convnext`` / ``convnext-film`` parts' settings.
_FLAT_NAMES = {
    "encoder": {
        "name": "convnext",
        "input_dim": "input_dim",
        "frames_per_code": "analysis_frames_per_code",
        "channels": "channels",
        "blocks": "encoder_blocks",
        "kernel_size": "kernel_size",
        "expansion": "expansion",
    },
    "decoder": {
        "name": "convnext-film",
        "output_dim": "output_dim",
        "speaker_dim": "speaker_dim",
        "frames_per_code": "synthesis_frames_per_code",
        "channels": "channels",
        "blocks": "decoder_blocks",
        "upsampled_channels": "upsampled_channels",
        "upsampled_blocks": "upsampled_blocks",
        "kernel_size": "kernel_size",
        "expansion": "expansion",
    },
    "heads": {
        name: name
        for name in ("content_channels", "content_dim", "kernel_size", "expansion", "phoneme_symbols")
    },
}


def _flat_given(given: dict[str, Any]) -> dict[str, Any] | None:
    """Settings given in the parts' form, in the flat form's names (``None``: not expressible there)."""
    flat: dict[str, Any] = {key: given[key] for key in ("name", "quantizer") if key in given}
    flat.update(given.get("objective", {}))
    for section, names in _FLAT_NAMES.items():
        for key, value in given.get(section, {}).items():
            if key == "name":
                if value != names["name"]:
                    return None
                continue
            if key not in names or flat.get(names[key], value) != value:
                return None
            flat[names[key]] = value
    return flat


def _parts_form(codec: dict[str, Any]) -> dict[str, Any]:
    """A saved codec section in the parts' form (the flat form mapped onto its parts), widths left out."""
    if any(key in codec for key in _PART_SECTIONS):
        return {key: dict(value) if isinstance(value, dict) else value for key, value in codec.items()}
    from plutok.parts import settings_from_config
    from plutok.settings import ContentCodecSettings

    encoder, decoder, heads, objective = settings_from_config(ContentCodecSettings, codec, "codec").parts()
    for section in (encoder, decoder):
        for key in ("input_dim", "output_dim", "speaker_dim"):
            section.pop(key, None)
    heads_section = dataclasses.asdict(heads)
    heads_section["phoneme_symbols"] = list(heads_section["phoneme_symbols"])
    return {
        "name": codec["name"],
        "encoder": encoder,
        "quantizer": dict(codec.get("quantizer", {})),
        "decoder": decoder,
        "heads": heads_section,
        "objective": dataclasses.asdict(objective),
    }


def _merged_parts(init_from: Any, saved: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """The saved codec in the parts' form with the parts' settings ``given`` laid over it.

    The encoder decides the codes: none of its settings may change. A decoder of another
    kind replaces the saved one (it starts fresh); the same decoder may grow its blocks.
    The quantizer follows the flat form's rules; the heads may gain a phoneme inventory;
    the loss weights are free.
    """
    merged = _parts_form(saved)
    if "name" in given and given["name"] != merged["name"]:
        raise ArchitectureConflict(
            f"--codec {given['name']} contradicts {init_from}, a {merged['name']!r} codec"
        )
    for key, value in given.get("encoder", {}).items():
        old = merged["encoder"].get(key)
        if old is not None and value != old:
            flag = "--encoder" if key == "name" else "--encoder-" + key.replace("_", "-")
            raise ArchitectureConflict(
                f"{flag} {json.dumps(value)} contradicts {init_from}'s encoder ({key} {json.dumps(old)}), "
                "which decides the codes; leave it out"
            )
        merged["encoder"][key] = value
    decoder = dict(given.get("decoder", {}))
    if decoder.get("name", merged["decoder"]["name"]) != merged["decoder"]["name"]:
        merged["decoder"] = decoder  # another kind of decoder: it starts fresh
    else:
        for key, value in decoder.items():
            old = merged["decoder"].get(key)
            flag = "--decoder-" + key.replace("_", "-")
            if key in ("blocks", "upsampled_blocks") and old is not None and value < old:
                raise ArchitectureConflict(
                    f"{flag} {value} is below {init_from}'s {old}: a decoder can grow, not shrink"
                )
            if key not in ("blocks", "upsampled_blocks") and old is not None and value != old:
                raise ArchitectureConflict(
                    f"{flag} {json.dumps(value)} contradicts {init_from}'s decoder ({key} {json.dumps(old)})"
                )
            merged["decoder"][key] = value
    if "quantizer" in given:
        old = merged.get("quantizer", {})
        clash = [
            k for k in _QUANTIZER_SHAPE if k in given["quantizer"] and given["quantizer"][k] != old.get(k)
        ]
        if clash:
            shown = ", ".join(f"{k} {old.get(k)!r}" for k in clash)
            raise ArchitectureConflict(f"--quantizer contradicts {init_from}'s quantizer ({shown})")
        merged["quantizer"] = {**old, **given["quantizer"]}
    for key, value in given.get("heads", {}).items():
        old = merged.setdefault("heads", {}).get(key)
        if key != "phoneme_symbols" and old is not None and value != old:
            flag = "--" + key.replace("_", "-")
            raise ArchitectureConflict(
                f"{flag} {json.dumps(value)} contradicts {init_from} ({key} {json.dumps(old)})"
            )
        merged["heads"][key] = value
    merged["objective"] = {**merged.get("objective", {}), **given.get("objective", {})}
    return merged


def _built(frontend: dict[str, Any]) -> dict[str, Any]:
    """A frontend config with every default filled in (what it compares by)."""
    return registry.build("frontend", frontend).config()


def _without_digest(config: Any) -> dict[str, Any] | None:
    if not isinstance(config, dict):
        return None
    return {key: value for key, value in config.items() if key != "weights_sha256"}


def train_codec(
    cache_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    codec_config: dict[str, Any],
    trainer_config: TrainerConfig,
    resume: bool = False,
    train_split: str = "train",
    dev_split: str = "dev",
    callback: Callback | None = None,
    frontend_config: dict[str, Any] | None = None,
    init_from: str | os.PathLike | None = None,
    freeze_codes: bool = False,
    adversarial: AdversarialSettings | None = None,
    speaker_config: dict[str, Any] | None = None,
) -> tuple[Codec, dict[str, float]]:
    """Train the codec ``codec_config`` describes on a cache; writes ``out_dir/codec/`` when done.

    The codec's input standardisation is fixed from the training data first (a
    sample of frames and every speaker vector), so resumed runs and the saved
    model use exactly the statistics of the start. ``frontend_config``: the model's
    frontend when it is not the cache's own (a stack derived from the cache,
    :class:`~plutok.training.cache.AnalysisReader`).
    ``init_from``: a codec or model folder, or a bundled model's name, whose ``codec.safetensors``
    (same architecture, or fewer decoder blocks: :func:`start_from`; loss weights may differ)
    starts the run instead of a fresh codec; its statistics and
    codebook are kept (no re-standardisation, no k-means), except a codebook of another
    size, which k-means over the loaded encoder's latents starts. ``freeze_codes``: train only what
    decodes (:func:`freeze_code_weights`), so an ``init_from``
    model's codes, and the token ids its BPE makes of them, keep their meaning.
    ``adversarial``: the adversarial term's settings (:mod:`plutok.training.adversarial`;
    off unless its ``weight`` > 0); recorded in the checkpoints, not in the codec's config.
    ``speaker_config``: the model's speaker encoder when it is not the cache's, derived from
    the cached vectors (:func:`~plutok.training.speaker.cached_vector_map`); a ``learned-mel``
    one is trained with the decoder (:mod:`plutok.training.speaker`) and saved beside the
    codec with the run's default voice (the medoid of the training vectors).
    Under ``torchrun`` (a process group joined first) every rank trains on its own crops
    and rank 0 writes (see :mod:`plutok.training.trainer`).
    Returns:
        the trained codec and the final metrics.
    """
    if freeze_codes and init_from is None:
        raise ModelError("freeze_codes needs init_from: a fresh encoder's codes mean nothing")
    cache = FeatureCache(cache_dir)
    cached_speaker = registry.build("speaker", cache.config["speaker"])
    speaker = cached_speaker if speaker_config is None else registry.build("speaker", speaker_config)
    to_model_vector = cached_vector_map(speaker, cached_speaker)
    learned = speaker if isinstance(speaker, LearnedMelSpeaker) else None
    if init_from is not None:
        folder = resolve_model_folder(init_from)
        _codec_weights(folder)  # a folder without weights: that, before anything else
        has_config = (folder / "config.json").is_file()
        saved_speaker = starting_point(folder, {}).speaker if has_config else None
        if (
            speaker_config is None
            and saved_speaker is not None
            and registry.build("speaker", saved_speaker).config() != speaker.config()
        ):
            raise ModelError(
                f"{init_from} reads {json.dumps(saved_speaker)} speaker vectors, the cache has "
                f"{json.dumps(cache.config['speaker'])}; cache again with --speaker '{json.dumps(saved_speaker)}'"
            )
    frontend_config = frontend_config or cache.config["frontend"]
    try:
        reader = AnalysisReader(cache, registry.build("frontend", frontend_config), speaker)
    except ModelError as error:
        if init_from is None:
            raise
        raise ModelError(
            f"{init_from} reads {frontend_config['name']} features, which this cache of "
            f"{cache.config['frontend']['name']} features cannot give ({error}); cache the audio again "
            "with plutok cache and its default --frontend"
        ) from None
    train = [
        dataclasses.replace(u, speaker=to_model_vector(u.speaker)) for u in cache.utterances(train_split)
    ]
    if not train:
        held = sorted({u.split for u in cache.utterances()})
        raise ModelError(
            f"{cache_dir}: no cached clip of split {train_split!r} to train on (the cache holds "
            f"{len(cache)} clip(s){' of split ' + ', '.join(map(repr, held)) if held else ''}); "
            "re-cache a corpus whose rows have a 'split', or a folder of audio"
        )
    dev = [dataclasses.replace(u, speaker=to_model_vector(u.speaker)) for u in cache.utterances(dev_split)]
    codec_config = with_dimensions(
        codec_config, reader.frontend.feature_dim, cache.config["mel_dim"], speaker.speaker_dim
    )
    labels = None
    if _section(codec_config, "objective").get("ctc_weight", 0) > 0:
        labels = _phoneme_ids(cache, train, dev, codec_config)
    seed_everything(trainer_config.seed)  # the codec's initialisation is the seed's alone
    codec = registry.build("codec", codec_config)
    if learned is not None:
        learned.initialize()  # after the codec: its start is that of a run without it
    if init_from is not None:
        weights = _codec_weights(folder)
        added = start_from(codec, weights, _saved_decoder(weights))
        if "decoder" in added:  # a decoder of another kind starts fresh, its speaker statistics too
            codec.decoder.set_statistics(torch.from_numpy(np.stack([u.speaker for u in train])))
        if added and distributed.context().is_writer:
            print(json.dumps({"started_from": str(weights), "new_parts": added}), flush=True)
        # The loaded codebook is the start: a k-means over its own encoder would replace it.
        # A codebook of a new size was not loaded: the k-means over the trained encoder's
        # latents is its start.
        if CODEBOOK_KEY not in added:
            trainer_config = dataclasses.replace(trainer_config, init_batches=0)
        elif freeze_codes:
            raise ModelError("freeze_codes keeps the saved codebook: it cannot change the number of codes")
    else:
        rng = np.random.default_rng(trainer_config.seed)
        sample = rng.choice(len(train), size=min(len(train), 2000), replace=False)
        frames = np.concatenate([reader(train[int(i)]) for i in sample], axis=1)
        speakers = np.stack([u.speaker for u in train])
        codec.set_statistics(torch.from_numpy(frames), torch.from_numpy(speakers))
    if learned is not None:
        standardize_learned(codec.decoder, learned)
    a, s = codec.analysis_frames_per_code, codec.synthesis_frames_per_code
    segment = trainer_config.segment_codes
    utterance_frames = UTTERANCE_FRAMES if learned is not None else None
    # Under torchrun each rank draws its own crops (the dev set is the same everywhere).
    rank = distributed.context().rank
    batches = SegmentBatcher(
        train,
        speaker,
        segment,
        a,
        s,
        seed=trainer_config.seed + rank,
        reader=reader,
        phonemes=labels,
        kind_weights={"real": trainer_config.real_weight},
        utterance_frames=utterance_frames,
    )
    dev_batches = (
        SegmentBatcher(
            dev, speaker, segment, a, s, reader=reader, phonemes=labels, utterance_frames=utterance_frames
        )
        if dev
        else None
    )
    objective = codec_objective(codec, update_codebook=not freeze_codes, adversarial=adversarial)
    if learned is not None:
        objective = LearnedSpeakerObjective(objective, learned)
    if freeze_codes:
        freeze_code_weights(codec)
    out = Path(out_dir)
    trainer = Trainer(
        codec,
        batches,
        dev_batches,
        trainer_config,
        out,
        callback=callback,
        objective=objective,
    )
    trainer.setup(resume=resume)
    metrics = trainer.run()
    if distributed.context().distributed:
        metrics = {**metrics, "replicas_equal": float(len(set(trainer.replica_digests())) == 1)}
    if trainer.step_number >= trainer_config.steps and distributed.context().is_writer:
        codec = codec.cpu()
        target = out / CODEC_DIR
        target.mkdir(parents=True, exist_ok=True)
        codec.save_weights(target)
        config = {"codec": codec.config(), "speaker": speaker.config(), "frontend": frontend_config}
        if learned is not None:
            round_to_half(learned.network.cpu())
            learned.save_weights(target)
            learned.trained = True
            from plutok.training.assemble import medoid_speaker

            vectors = learned_vectors(learned, train, UTTERANCE_FRAMES)
            config["default_speaker"] = [float(v) for v in medoid_speaker(vectors).astype(np.float16)]
        atomic_write_text(target / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
        atomic_write_text(out / "history.json", json.dumps(trainer.history, indent=1) + "\n")
    return codec, metrics


#: Where the parts' sections of a ``content`` codec config sit: ``encoder``/``decoder``
#: sections in the parts' form; the flat form of the first v2 models holds everything at the top.
_DIMENSIONS = {"encoder": ("input_dim",), "decoder": ("output_dim", "speaker_dim")}


def _section(codec_config: dict[str, Any], name: str) -> dict[str, Any]:
    """The part of ``codec_config`` holding ``name``'s settings (``heads``, ``objective``, ``encoder``, ``decoder``)."""
    if "encoder" in codec_config or "decoder" in codec_config:
        return codec_config.setdefault(name, {})
    return codec_config


def with_dimensions(
    codec_config: dict[str, Any], input_dim: int, output_dim: int, speaker_dim: int
) -> dict[str, Any]:
    """A copy of ``codec_config`` with the data's widths where it leaves them out."""
    config = {key: dict(value) if isinstance(value, dict) else value for key, value in codec_config.items()}
    values = {"input_dim": input_dim, "output_dim": output_dim, "speaker_dim": speaker_dim}
    for part, names in _DIMENSIONS.items():
        section = _section(config, part)
        if section is config:  # the flat form: every width is a setting of it
            wanted = set(names)
        else:
            wanted = set(names) & _setting_names(part, section.get("name"))
        for name in sorted(wanted):
            section.setdefault(name, values[name])
    return config


def _setting_names(kind: str, name: str | None) -> set[str]:
    """The settings fields of the registered part ``name`` of ``kind`` (empty when unknown)."""
    if not isinstance(name, str):
        return set()
    settings = registry.settings_class(kind, name)
    return {field.name for field in dataclasses.fields(settings)} if settings is not None else set()


def codec_objective(
    codec: Codec, update_codebook: bool = True, adversarial: AdversarialSettings | None = None
) -> Objective:
    """The training objective of ``codec`` (:mod:`plutok.training.objectives`), with the
    adversarial term (:mod:`plutok.training.adversarial`) when ``adversarial`` is enabled."""
    if codec.name == "vqvae":
        if adversarial is not None and adversarial.enabled:
            raise ModelError(
                "the adversarial term needs a content codec (the v1 VQ-VAE has no log-mel decoder)"
            )
        return VQVAECodecObjective()
    objective = ContentCodecObjective(codec.objective, update_codebook=update_codebook)
    if adversarial is not None and adversarial.enabled:
        return AdversarialObjective(objective, adversarial)
    return objective


def _code_modules(codec: Codec) -> dict[str, torch.nn.Module]:
    """The parts of ``codec`` that decide its codes: its encoder and quantizer."""
    if not isinstance(getattr(codec, "encoder", None), CodecEncoder):
        raise ModelError(f"codec {codec.name!r} has no encoder part: its codes cannot be kept fixed")
    return {"encoder": codec.encoder, "quantizer": codec.quantizer}


def freeze_code_weights(codec: Codec) -> None:
    """Stop training what decides the codes (standardisation, encoder, codebook): they stay as they are.

    The trainer's codebook upkeep stops too (``ContentCodecObjective(update_codebook=False)``),
    and the quantizer loss becomes a constant.
    """
    for module in _code_modules(codec).values():
        module.requires_grad_(False)


def code_state_dict(codec: Codec) -> dict[str, torch.Tensor]:
    """The weights and statistics that decide the codes (what :func:`freeze_code_weights` keeps)."""
    kept = {saved for part in _code_modules(codec) for saved in codec.saved_names(part).values()}
    return {key: value for key, value in codec.state_dict().items() if key in kept}


def start_from(codec: Codec, path: Path, saved_decoder: str | None = None) -> list[str]:
    """Load into ``codec`` the weights of a trained codec that may have fewer decoder blocks or codes; returns what is new.

    Everything the saved codec has must match (keys and shapes); blocks a ``convnext-film``
    decoder adds at the end of ``decoder`` (25 Hz) or ``upsampled`` (100 Hz) start as the identity (their
    last layer zero), so training begins from the saved codec's exact output and a bigger
    decoder can be trained on for the codes of a model that ships. A CTC phoneme head the
    saved codec lacks starts fresh (``ctc_weight`` on a codec trained without it). A
    codebook with another number of codes (same code dimension) is not loaded:
    ``"quantizer.codebook"`` is then in the returned list, and the caller initialises it
    from the trained encoder's latents (the trainer's k-means): how v2.4 grew from
    1,024 to 4,096 codes. ``saved_decoder``: the registered name of the saved codec's
    decoder; when ``codec``'s is another one, only the encoder, quantizer and heads are
    loaded and the decoder (``"decoder"`` in the returned list) starts fresh: a new decoder
    for the codes of a saved codec.
    """
    state = read_weights(path, "codec")
    expected = codec.state_dict()
    fresh_decoder = []
    if saved_decoder is not None and saved_decoder != getattr(getattr(codec, "decoder", None), "name", None):
        decoder_keys = set(codec.saved_names("decoder").values())
        expected = {key: value for key, value in expected.items() if key not in decoder_keys}
        state = {key: value for key, value in state.items() if key in expected}
        fresh_decoder = ["decoder"]
    added_codebook = []
    saved_codebook = state.get(CODEBOOK_KEY)
    if (
        saved_codebook is not None
        and CODEBOOK_KEY in expected
        and saved_codebook.shape[1:] == expected[CODEBOOK_KEY].shape[1:]
        and saved_codebook.shape[0] != expected[CODEBOOK_KEY].shape[0]
    ):
        state = {key: value for key, value in state.items() if key != CODEBOOK_KEY}
        expected = {key: value for key, value in expected.items() if key != CODEBOOK_KEY}
        added_codebook = [CODEBOOK_KEY]
    added = sorted(
        {".".join(key.split(".")[:3]) for key in expected if key not in state and _GROWABLE.match(key)}
        if getattr(getattr(codec, "decoder", None), "name", None) == _GROWABLE_DECODER
        else ()
    )
    # A phoneme head the saved codec lacks is a loss head (nothing decodes through it):
    # it starts from its random initialisation.
    heads = []
    if not any(key.startswith(_PHONEME_HEAD) for key in state):
        heads = sorted({key.split(".")[0] for key in expected if key.startswith(_PHONEME_HEAD)})
    kept = {
        key: shape
        for key, shape in expected.items()
        if not key.startswith(tuple(part + "." for part in added + heads))
    }
    problem = describe_mismatch(
        {k: tuple(v.shape) for k, v in kept.items()}, {k: tuple(v.shape) for k, v in state.items()}
    )
    if problem:
        raise ModelError(f"{path} cannot start this codec: {problem}")
    codec.load_state_dict({key: value.float() for key, value in state.items()}, strict=False)
    module_keys = {saved: key for key, saved in codec.saved_names("decoder").items()}
    with torch.no_grad():
        for block in added:
            for tensor in ("weight", "bias"):
                codec.get_parameter(module_keys[f"{block}.project.{tensor}"]).zero_()
    return fresh_decoder + added + heads + added_codebook


def _saved_decoder(weights: Path) -> str | None:
    """The registered decoder name in the ``config.json`` beside a codec weight file (``None``: none known)."""
    config_path = weights.parent / "config.json"
    if not config_path.is_file():
        return None
    section = json.loads(config_path.read_text(encoding="utf-8")).get("codec", {})
    if section.get("name") != "content":
        return None
    decoder = section.get("decoder")
    # The flat section of the first v2 models is the convnext-film decoder's.
    return decoder.get("name") if isinstance(decoder, dict) else _GROWABLE_DECODER


def _codec_weights(folder: Path) -> Path:
    """``codec.safetensors`` of a codec folder (a run's ``codec/``) or a model folder."""
    from plutok.codec.content import WEIGHTS_FILE

    for candidate in (folder / WEIGHTS_FILE, folder / CODEC_DIR / WEIGHTS_FILE):
        if candidate.is_file():
            return candidate
    raise ModelError(f"no {WEIGHTS_FILE} in {folder} or {folder / CODEC_DIR}")


def _phoneme_ids(
    cache: FeatureCache,
    train: list[CachedUtterance],
    dev: list[CachedUtterance],
    codec_config: dict[str, Any],
) -> dict[str, list[int]]:
    """CTC labels of every utterance; the inventory (the training set's phonemes) goes into ``codec_config``.

    The inventory is a function of the training texts, so a resumed run rebuilds the same one;
    an inventory already in ``codec_config`` is kept.
    """
    everything = [*train, *dev]
    phonemes = phoneme_labels([(u.id, u.text, u.language) for u in everything], cache.directory)
    heads = _section(codec_config, "heads")
    if heads.get("phoneme_symbols"):
        inventory = PhonemeInventory(heads["phoneme_symbols"])
    else:
        inventory = PhonemeInventory.from_sequences(phonemes[u.id] for u in train if u.id in phonemes)
        heads["phoneme_symbols"] = list(inventory.symbols)
    if not len(inventory):
        raise ModelError("ctc_weight > 0 but no training utterance has phoneme labels (no text?)")
    return {key: inventory.encode(value) for key, value in phonemes.items()}
