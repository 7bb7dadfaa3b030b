"""Last training stage: BPE over the trained codec's codes, then a complete model directory.

``plutok assemble CACHE RUN/codec -o MODEL --vocab-size N``

or, for a decoder trained on a shipped model's codes (``train-codec --init-from MODEL
--freeze-codes``), the model with that decoder and its own BPE:
``plutok assemble CACHE RUN/codec -o NEW --decoder-for MODEL``

or, for a codec trained on from a model with the same codebook (``--init-from MODEL``,
codes free to move), that model's BPE instead of one trained on ``CACHE``'s codes:
``plutok assemble CACHE RUN/codec -o NEW --bpe-from MODEL``. A fine-tuning set is
usually far smaller than the corpus the shipped BPE was trained on, and a BPE is only
a reversible grouping of codes: any code sequence encodes, so the old one stays valid.

The codec weights are rounded to float16 values first, so the BPE is trained on
the codes of exactly the model that ships (and the file is half the size). The
model's default voice (what ``decode_ids`` uses without a speaker) is the medoid
of the training speaker vectors: a real utterance's voice, the one closest to the
average in standardised units.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from plutok import registry
from plutok.api import Plutok
from plutok.bpe import CodeBPE
from plutok.errors import ModelError
from plutok.model_directory import ModelParts
from plutok.training.cache import AnalysisReader, FeatureCache

__all__ = [
    "MAX_VOCAB_SIZE",
    "assemble_model",
    "check_vocab_size",
    "load_trained_codec",
    "medoid_speaker",
    "replace_decoder",
    "replace_vocoder",
    "vocab_shortfall",
]

#: Largest vocabulary a BPE may be asked for: beyond any language model's embedding table
#: (Llama 3: 128k), so a larger number is a typo, not a plan.
MAX_VOCAB_SIZE = 1 << 20


def check_vocab_size(vocab_size: int, codebook_size: int) -> None:
    """:class:`ModelError` (one line) for a vocabulary no BPE over ``codebook_size`` codes can have.

    Tokens ``0..codebook_size - 1`` are the codes themselves, so the size must be above
    ``codebook_size`` and at most :data:`MAX_VOCAB_SIZE`. A size the training codes
    cannot reach is not an error: the BPE stops early (:func:`vocab_shortfall`).
    """
    if vocab_size <= codebook_size:
        raise ModelError(
            f"vocabulary size {vocab_size} must be above the codebook size {codebook_size} "
            "(the first tokens are the codes themselves; the rest are merged pairs)"
        )
    if vocab_size > MAX_VOCAB_SIZE:
        raise ModelError(f"vocabulary size {vocab_size} is above the limit {MAX_VOCAB_SIZE:,}")


def vocab_shortfall(requested: int, reached: int) -> str | None:
    """A one-line warning when the BPE stopped below the size asked for (``None`` when it did not)."""
    if reached >= requested:
        return None
    return (
        f"the BPE stopped at {reached} tokens of the {requested} asked for: no further pair of tokens "
        "occurs twice in the training codes (more audio gives more merges); the model has "
        f"{reached} tokens"
    )


def load_trained_codec(codec_dir: str | os.PathLike) -> Any:
    """The codec written by ``plutok train-codec`` into ``RUN/codec``."""
    directory = Path(codec_dir)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise ModelError(f"{directory}: no config.json; not a codec folder from 'plutok train-codec'")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    return registry.build("codec", config["codec"], directory)


def medoid_speaker(speakers: np.ndarray) -> np.ndarray:
    """The row of ``speakers`` ``(N, D)`` nearest the mean, in per-dimension standardised units."""
    mean, std = speakers.mean(axis=0), speakers.std(axis=0) + 1e-6
    distances = np.square((speakers - mean) / std).sum(axis=1)
    return speakers[int(np.argmin(distances))]


def assemble_model(
    cache_dir: str | os.PathLike,
    codec_dir: str | os.PathLike,
    output: str | os.PathLike,
    vocab_size: int = 12000,
    metadata: dict[str, Any] | None = None,
    split: str = "train",
    progress: bool = True,
    vocoder: dict[str, Any] | None = None,
    bpe_from: str | os.PathLike | None = None,
) -> Plutok:
    """Train the BPE on the codes of ``split`` and save the full model to ``output``.

    ``bpe_from``: a model (bundled name or folder) whose BPE and default voice are kept
    instead (no BPE training); its codebook size must be the codec's. A run trained with
    its own speaker encoder (``train-codec --speaker``) needs it, and brings that encoder
    and its own default voice.

    The BPE stops early when no pair of tokens occurs twice any more: the model's
    ``vocab_size`` may be below ``vocab_size`` (:func:`vocab_shortfall` words it). A size
    no BPE can have (at or below the codebook size, or absurdly large) is refused before
    any work (:func:`check_vocab_size`).
    ``vocoder``: config of the vocoder that reads the codec's output (default: the packaged HiFi-GAN).
    """
    cache = FeatureCache(cache_dir)
    codec = load_trained_codec(codec_dir)
    codec.round_to_half()
    run_config = json.loads((Path(codec_dir) / "config.json").read_text(encoding="utf-8"))
    frontend = registry.build("frontend", run_config.get("frontend", cache.config["frontend"]))
    speaker = registry.build("speaker", cache.config["speaker"])
    own_speaker = _own_speaker(codec_dir, run_config, speaker)
    if own_speaker is not None:
        if bpe_from is None:
            # A BPE trained here would need the codes of the run's speaker normalisation, which
            # the cached vectors do not give; a kept BPE needs none.
            raise ModelError(
                f"{codec_dir} was trained with its own speaker encoder ({run_config['speaker']['name']}): "
                "keep a BPE with --bpe-from MODEL, or swap the decoder into the model it started "
                "from with --decoder-for MODEL"
            )
        speaker = own_speaker
    reader = AnalysisReader(cache, frontend, speaker)
    if bpe_from is not None:
        from plutok.model_directory import load_model_parts

        source = load_model_parts(bpe_from)
        if source.bpe.codebook_size != codec.codebook_size:
            raise ModelError(
                f"{bpe_from}: its BPE reads {source.bpe.codebook_size} codes, the codec makes {codec.codebook_size}"
            )
        bpe, default_speaker = source.bpe, source.default_speaker
        if own_speaker is not None:  # the kept model's voice is a vector of another encoder
            default_speaker = run_config.get("default_speaker")
    else:
        bpe, default_speaker = _train_bpe(cache, codec, reader, cache_dir, split, vocab_size, progress)
    parts = ModelParts(
        frontend=frontend,
        speaker=speaker,
        codec=codec,
        vocoder=registry.build("vocoder", vocoder or {"name": "hifigan-16k"}),
        bpe=bpe,
        metadata=dict(metadata or {}),
        default_speaker=default_speaker,
    )
    model = Plutok(parts)
    model.save(output)
    return model


def _train_bpe(
    cache: FeatureCache, codec: Any, reader: Any, cache_dir: Any, split: str, vocab_size: int, progress: bool
) -> tuple[CodeBPE, list[float]]:
    """The BPE over the codes of ``split`` and the medoid training voice (float16-rounded)."""
    from tqdm import tqdm

    utterances = cache.utterances(split)
    if not utterances:
        raise ModelError(f"{cache_dir}: no cached clip of split {split!r} to train the BPE on")
    check_vocab_size(vocab_size, codec.codebook_size)

    def code_sequences():
        for utterance in tqdm(utterances, desc="codes", unit="utt", disable=not progress):
            yield codec.encode(reader(utterance))

    bpe = CodeBPE.train(code_sequences(), codec.codebook_size, vocab_size=vocab_size, progress=progress)
    speakers = np.stack([u.speaker for u in utterances])
    default_speaker = medoid_speaker(speakers).astype(np.float16).astype(np.float32)
    return bpe, [float(v) for v in default_speaker]


def replace_vocoder(
    model_dir: str | os.PathLike | None, vocoder_dir: str | os.PathLike, output: str | os.PathLike
) -> Plutok:
    """Save a copy of a v2 model whose vocoder is the one in ``vocoder_dir`` (``RUN/vocoder`` of train-vocoder).

    The codes are unchanged, but the fingerprint covers the vocoder, so the copy is a
    new model: ``.plt`` files of the original decode only with the original.
    """
    from plutok.model_directory import load_model_parts

    parts = load_model_parts(model_dir)
    if parts.legacy_backbone is not None:
        raise ModelError("a v1 model's vocoder is part of its backbone and cannot be replaced")
    directory = Path(vocoder_dir)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise ModelError(f"{directory}: no config.json; not a vocoder folder from 'plutok train-vocoder'")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    vocoder = registry.build("vocoder", config["vocoder"], directory)
    if vocoder.feature_dim != parts.vocoder.feature_dim or vocoder.hop_length != parts.vocoder.hop_length:
        raise ModelError("the new vocoder reads other features than the model's codec writes")
    parts.vocoder = vocoder
    parts.metadata = {**parts.metadata, "vocoder_trained": config.get("trainer", {})}
    model = Plutok(parts)
    model.save(output)
    return model


def replace_decoder(
    model_dir: str | os.PathLike | None,
    codec_dir: str | os.PathLike,
    output: str | os.PathLike,
    metadata: dict[str, Any] | None = None,
) -> Plutok:
    """Save a copy of a v2 model with the decoder of ``codec_dir`` (``RUN/codec`` of ``train-codec --freeze-codes``).

    The new codec must make exactly the model's codes (its
    :func:`~plutok.training.codec.code_state_dict`, rounded
    to float16 values as shipped, equal to the model's), so the model's BPE, and every token
    id a language model learned, keep their meaning; otherwise :class:`ModelError` (run
    :func:`assemble_model` for a new BPE). The fingerprint changes with the decoder; a
    post-filter the model had is dropped (its gains belong to the old decoder).
    A run trained with its own speaker encoder (``train-codec --speaker``) brings it and its
    default voice along: the token space then changes too, since the encoder reads the
    log-mel normalised by the new speaker statistics (same code weights, yet some codes
    differ: 11.6 % of them for the bundled model with ``learned-mel``'s defaults).
    """
    import torch

    from plutok.model_directory import load_model_parts
    from plutok.training.codec import code_state_dict

    parts = load_model_parts(model_dir)
    codec = load_trained_codec(codec_dir).round_to_half()
    if parts.legacy_backbone is not None:
        raise ModelError("a v1 model's decoder cannot be swapped")
    old, new = code_state_dict(parts.codec), code_state_dict(codec)
    changed = sorted(key for key in old if key not in new or not torch.equal(old[key], new[key]))
    if changed or set(new) != set(old):
        raise ModelError(
            f"{codec_dir} makes other codes than the model (differs in {', '.join(changed[:4]) or 'its keys'}): "
            "train it with --init-from the model's codec and --freeze-codes, or assemble a new BPE"
        )
    parts.codec = codec
    run_config = json.loads((Path(codec_dir) / "config.json").read_text(encoding="utf-8"))
    own_speaker = _own_speaker(codec_dir, run_config, parts.speaker)
    if own_speaker is not None:
        parts.speaker = own_speaker
        parts.default_speaker = run_config.get("default_speaker", parts.default_speaker)
    # A post-filter's gains were measured on the old decoder's output; measure them again
    # for this one (scripts/global_variance_pilot.py --save-model).
    parts.postfilter = None
    parts.metadata = {**parts.metadata, **(metadata or {})}
    model = Plutok(parts)
    model.save(output)
    return model


def _own_speaker(codec_dir: str | os.PathLike, run_config: dict[str, Any], speaker: Any) -> Any:
    """The speaker encoder a ``train-codec --speaker`` run was trained with, built with its
    weights from ``codec_dir``, when it is not ``speaker``; ``None`` otherwise."""
    section = run_config.get("speaker")
    if section is None or registry.build("speaker", section).config() == speaker.config():
        return None
    return registry.build("speaker", section, Path(codec_dir))


def _main() -> None:  # pragma: no cover - the old entry point, now ``plutok assemble``
    import sys

    from plutok.cli import main

    raise SystemExit(main(["assemble", *sys.argv[1:]]))


if __name__ == "__main__":
    _main()
