"""Train a codec on a feature cache: ``plutok train-codec CACHE -o RUN`` (see docs/training.md)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from plutok import distributed, registry
from plutok.codec.base import Codec
from plutok.codec.content import CODEBOOK_KEY
from plutok.errors import ModelError
from plutok.files import atomic_write_text
from plutok.training.cache import AnalysisReader, CachedUtterance, FeatureCache
from plutok.training.data import SegmentBatcher
from plutok.training.phonemes import PhonemeInventory, phoneme_labels
from plutok.training.trainer import Callback, Trainer, TrainerConfig

__all__ = ["train_codec", "CODEC_DIR"]

CODEC_DIR = "codec"


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
) -> tuple[Codec, dict[str, float]]:
    """Train the codec ``codec_config`` describes on a cache; writes ``out_dir/codec/`` when done.

    The codec's input standardisation is fixed from the training data first (a
    sample of frames and every speaker vector), so resumed runs and the saved
    model use exactly the statistics of the start. ``frontend_config``: the model's
    frontend when it is not the cache's own (a stack derived from the cache,
    :class:`~plutok.training.cache.AnalysisReader`).
    ``init_from``: a codec or model folder whose ``codec.safetensors`` (same architecture,
    or fewer decoder blocks: :meth:`~plutok.codec.content.ContentCodec.start_from`; loss
    weights may differ) starts the run instead of a fresh codec; its statistics and
    codebook are kept (no re-standardisation, no k-means), except a codebook of another
    size, which k-means over the loaded encoder's latents starts. ``freeze_codes``: train only what
    decodes (:meth:`~plutok.codec.content.ContentCodec.freeze_codes`), so an ``init_from``
    model's codes, and the token ids its BPE makes of them, keep their meaning.
    Under ``torchrun`` (a process group joined first) every rank trains on its own crops
    and rank 0 writes (see :mod:`plutok.training.trainer`).
    Returns:
        the trained codec and the final metrics.
    """
    if freeze_codes and init_from is None:
        raise ModelError("freeze_codes needs init_from: a fresh encoder's codes mean nothing")
    cache = FeatureCache(cache_dir)
    speaker = registry.build("speaker", cache.config["speaker"])
    frontend_config = frontend_config or cache.config["frontend"]
    reader = AnalysisReader(cache, registry.build("frontend", frontend_config), speaker)
    train = cache.utterances(train_split)
    if not train:
        held = sorted({u.split for u in cache.utterances()})
        raise ModelError(
            f"{cache_dir}: no cached clip of split {train_split!r} to train on (the cache holds "
            f"{len(cache)} clip(s){' of split ' + ', '.join(map(repr, held)) if held else ''}); "
            "re-cache a corpus whose rows have a 'split', or a folder of audio"
        )
    dev = cache.utterances(dev_split)
    codec_config = dict(codec_config)
    codec_config.setdefault("input_dim", reader.frontend.feature_dim)
    codec_config.setdefault("output_dim", cache.config["mel_dim"])
    codec_config.setdefault("speaker_dim", speaker.speaker_dim)
    labels = None
    if codec_config.get("ctc_weight", 0) > 0:
        labels = _phoneme_ids(cache, train, dev, codec_config)
    codec = registry.build("codec", codec_config)
    if init_from is not None:
        weights = _codec_weights(Path(init_from))
        added = (
            codec.start_from(weights) if hasattr(codec, "start_from") else codec.load_weights(weights)
        ) or []
        if added and distributed.context().is_writer:
            print(json.dumps({"started_from": str(weights), "new_parts": added}), flush=True)
        # The loaded codebook is the start: a k-means over its own encoder would replace it.
        # A codebook of a new size was not loaded: the k-means over the trained encoder's
        # latents is its start.
        if CODEBOOK_KEY not in added:
            trainer_config = dataclasses.replace(trainer_config, init_batches=0)
        elif freeze_codes:
            raise ModelError("freeze_codes keeps the saved codebook: it cannot change the number of codes")
    elif hasattr(codec, "set_statistics"):
        rng = np.random.default_rng(trainer_config.seed)
        sample = rng.choice(len(train), size=min(len(train), 2000), replace=False)
        frames = np.concatenate([reader(train[int(i)]) for i in sample], axis=1)
        speakers = np.stack([u.speaker for u in train])
        codec.set_statistics(torch.from_numpy(frames), torch.from_numpy(speakers))
    a, s = codec.analysis_frames_per_code, codec.synthesis_frames_per_code
    segment = trainer_config.segment_codes
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
    )
    dev_batches = SegmentBatcher(dev, speaker, segment, a, s, reader=reader, phonemes=labels) if dev else None
    if freeze_codes:
        if not hasattr(codec, "freeze_codes"):
            raise ModelError(f"codec {codec_config['name']!r} cannot keep its codes fixed")
        codec.freeze_codes()
    out = Path(out_dir)
    trainer = Trainer(codec, batches, dev_batches, trainer_config, out, callback=callback)
    trainer.setup(resume=resume)
    metrics = trainer.run()
    if distributed.context().distributed:
        metrics = {**metrics, "replicas_equal": float(len(set(trainer.replica_digests())) == 1)}
    if trainer.step_number >= trainer_config.steps and distributed.context().is_writer:
        codec = codec.cpu()
        target = out / CODEC_DIR
        target.mkdir(parents=True, exist_ok=True)
        codec.save_weights(target)
        config = {
            "codec": codec.config(),
            "speaker": cache.config["speaker"],
            "frontend": frontend_config,
        }
        atomic_write_text(target / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
        atomic_write_text(out / "history.json", json.dumps(trainer.history, indent=1) + "\n")
    return codec, metrics


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
    if codec_config.get("phoneme_symbols"):
        inventory = PhonemeInventory(codec_config["phoneme_symbols"])
    else:
        inventory = PhonemeInventory.from_sequences(phonemes[u.id] for u in train if u.id in phonemes)
        codec_config["phoneme_symbols"] = list(inventory.symbols)
    if not len(inventory):
        raise ModelError("ctc_weight > 0 but no training utterance has phoneme labels (no text?)")
    return {key: inventory.encode(value) for key, value in phonemes.items()}
