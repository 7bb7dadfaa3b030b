"""The v1 codec: the original Plutok VQ-VAE (:mod:`plutok.legacy.vqvae`) behind the :class:`Codec` contract.

Input and output are the same features (the speaker-normalised log-mel of the v1
default model, or OpenVoice ``z_p`` for the original release); the decoder does
not read the speaker vector. Weights stay in ``vqvae.safetensors`` with the
original key layout, and the config section stays ``vqvae`` in v1 model files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from plutok.codec.base import Codec
from plutok.digests import state_dict_sha256
from plutok.layers import receptive_field
from plutok.legacy.vqvae import VQVAE, WEIGHTS_NAME, VQVAEConfig
from plutok.settings import SamplingSettings

__all__ = ["VQVAECodec"]


class VQVAECodec(Codec):
    """Wraps a :class:`VQVAE`; ``self.model`` is the original module (state-dict keys unchanged)."""

    name = "vqvae"

    def __init__(self, model: VQVAE) -> None:
        super().__init__()
        self.model = model.eval()
        encoder = [model.input_proj, model.encoder, model.latent_in]
        self._encoder_context = receptive_field(encoder, model.downsample)
        self._decoder_context = receptive_field([model.latent_out, model.decoder, model.output_proj])

    # -- contract -------------------------------------------------------------------------
    @property
    def input_dim(self) -> int:
        return self.model.feature_dim

    @property
    def output_dim(self) -> int:
        return self.model.feature_dim

    @property
    def codebook_size(self) -> int:
        return self.model.codebook_size

    @property
    def analysis_frames_per_code(self) -> int:
        return self.model.downsample

    @property
    def synthesis_frames_per_code(self) -> int:
        return self.model.downsample

    @property
    def encoder_context(self) -> int:
        return self._encoder_context

    @property
    def decoder_context(self) -> int:
        return self._decoder_context

    def encode_tensor(self, analysis: torch.Tensor) -> torch.Tensor:
        return self.model.vq_layer.quantize(self.model.encode_tensor(analysis))

    def decode_tensor(
        self, codes: torch.Tensor, speaker: torch.Tensor | None, sampling: SamplingSettings | None = None
    ) -> torch.Tensor:
        return self.model.decode_tensor(self.model.vq_layer.dequantize(codes))

    # numpy encode/decode go through the VQ-VAE's own (identical) checks.
    def encode(self, analysis: np.ndarray) -> np.ndarray:
        return self.model.encode(analysis)

    def decode(
        self, codes: object, speaker: np.ndarray | None = None, sampling: SamplingSettings | None = None
    ) -> np.ndarray:
        return self.model.decode(codes)

    # -- saving ---------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {"name": self.name, **self.model.config.to_dict()}

    @classmethod
    def from_config(cls, config: dict[str, Any], directory: Path | None = None) -> VQVAECodec:
        settings = {key: value for key, value in config.items() if key not in ("name", "weights_sha256")}
        path = Path(directory) / WEIGHTS_NAME if directory is not None else None
        if path is None:
            return cls(VQVAE(VQVAEConfig.from_dict(settings)))
        return cls(VQVAE.load(path, config=VQVAEConfig.from_dict(settings)))

    def weights_digest(self) -> str:
        return state_dict_sha256(self.model.state_dict())

    def save_weights(self, directory: Path) -> None:
        self.model.save(directory, write_config=False)
