"""The :class:`~plutok.model_directory.ModelParts` of v1 models (format v1 ``config.json``) and of the original release.

A v1 model is a backbone (:mod:`plutok.legacy.backbones`), the VQ-VAE
(:mod:`plutok.legacy.vqvae`) and a BPE; :func:`parts_from_backbone` splits the backbone into
the frontend, speaker encoder and vocoder every model has and wraps the VQ-VAE as a codec,
so that the encode, decode and streaming paths use v1 models like any other.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from plutok.model_directory import TOKENIZER_FILE, ModelParts

__all__ = ["parts_from_backbone", "parts_from_openvoice", "parts_from_v1_config"]


def parts_from_backbone(
    backbone: Any, vqvae: Any, bpe: Any, metadata: dict[str, Any] | None = None
) -> ModelParts:
    """The v2 parts of a v1 model (a :class:`~plutok.legacy.backbones.Backbone` + VQ-VAE + BPE)."""
    from plutok.legacy.backbones.adapters import split_backbone
    from plutok.legacy.codec import VQVAECodec

    frontend, speaker, vocoder = split_backbone(backbone)
    return ModelParts(
        frontend, speaker, VQVAECodec(vqvae), vocoder, bpe, dict(metadata or {}), legacy_backbone=backbone
    )


def parts_from_openvoice(
    checkpoint: str | os.PathLike, vqvae: str | os.PathLike, tokenizer: str | os.PathLike
) -> ModelParts:
    """The original release: OpenVoice converter dir, VQ-VAE ``model.pth``, ``tokenizer.json``."""
    from plutok.bpe import load_original_tokenizer
    from plutok.legacy.backbones.openvoice import OpenVoiceBackbone
    from plutok.legacy.vqvae import VQVAE

    checkpoint = Path(checkpoint)
    converter = checkpoint / "converter" if (checkpoint / "converter").is_dir() else checkpoint
    backbone = OpenVoiceBackbone.from_checkpoint(converter)
    model = VQVAE.from_original(vqvae)
    bpe = load_original_tokenizer(tokenizer, codebook_size=model.codebook_size)
    return parts_from_backbone(
        backbone, model, bpe, metadata={"description": "original Plutok release (OpenVoice)"}
    )


def parts_from_v1_config(config: dict[str, Any], directory: Path) -> ModelParts:
    """The parts of a model directory of format v1 (``backbone`` + ``vqvae`` sections, ``vqvae.safetensors``).

    Raises:
        KeyError: a section is missing (the caller names the file).
    """
    from plutok.bpe import load_tokenizer
    from plutok.legacy.backbones import backbone_from_config
    from plutok.legacy.vqvae import VQVAE, VQVAEConfig

    backbone = backbone_from_config(config["backbone"], directory)
    vqvae = VQVAE.load(directory / "vqvae.safetensors", config=VQVAEConfig.from_dict(config["vqvae"]))
    bpe = load_tokenizer(directory / TOKENIZER_FILE, codebook_size=vqvae.codebook_size)
    parts = parts_from_backbone(backbone, vqvae, bpe, config.get("metadata"))
    parts.default_speaker = config.get("default_speaker")
    return parts
