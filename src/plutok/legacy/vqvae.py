"""The VQ-VAE stage: frame features ``(C, T)`` <-> discrete codes ``(T // downsample,)``.

The default architecture is exactly the original Plutok VQ-VAE (checked against
reference outputs of the original code, ``tests/test_vqvae.py``), with ``h = C``::

    encoder  ResBlock(h)
             Conv1d(h -> 2h, k3, stride 2, pad 1), ReLU        # the only downsampling
             4 x ResBlock(2h)
             Conv1d(2h -> 4h, k3, pad 1), ReLU
             4 x ResBlock(4h)
             Conv1d(4h -> 4h, k3, pad 1)                        # -> (4h, ceil(T / 2))
    quantizer nearest of (1 + 10 * scale) * codebook + 10 * bias, Euclidean
    decoder  2 x ResBlock(4h)
             ConvTranspose1d(4h -> h, k4, stride 2, pad 1), ReLU   # -> 2 * T' frames
             5 x ResBlock(h)
             Conv1d(h -> h, k3, pad 1)

    ResBlock(c): x + relu(conv(x)), conv = Conv1d(c -> c, k3, pad 1)

``downsample=1`` replaces the strided conv by a plain one and the transposed conv
by a k3 conv; ``downsample=4`` also strides the second encoder conv and
upsamples twice (4h -> 2h -> h). For ``downsample=2`` and ``channels == C`` the
state-dict keys and shapes are identical to the original checkpoint, so
:meth:`VQVAE.from_original` is a plain load and :meth:`VQVAE.save` output is
readable by the original code.

The quantizer is the package's one :class:`~plutok.quantizers.vq.VectorQuantizer`
with the original codebook layout (:class:`AffineVectorQuantizer`), so its
codebook training (k-means initialisation, dead-code replacement, EMA k-means) is
the v2 quantizer's; the training loop is :mod:`plutok.legacy.training`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from plutok.errors import ModelError
from plutok.files import atomic_path, atomic_write_text
from plutok.quantizers.vq import VectorQuantizer
from plutok.settings import VQVAEConfig
from plutok.weights import describe_mismatch

__all__ = ["VQVAE", "VQVAEConfig", "VQVAEOutput", "AffineVectorQuantizer", "WEIGHTS_NAME", "CONFIG_NAME"]

WEIGHTS_NAME = "vqvae.safetensors"
CONFIG_NAME = "vqvae.json"
_CONFIG_METADATA_KEY = "plutok_vqvae_config"
AFFINE_LR_SCALE = 10.0  # the original's learning-rate scale of the codebook affine transform


class ResBlock(nn.Module):
    """``x + relu(conv(x))`` with a same-length k3 convolution (the original's block)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.relu(self.conv(x))


def _encoder(h: int, downsample: int) -> nn.Sequential:
    first_stride, second_stride = {1: (1, 1), 2: (2, 1), 4: (2, 2)}[downsample]
    return nn.Sequential(
        ResBlock(h),
        nn.Conv1d(h, 2 * h, kernel_size=3, stride=first_stride, padding=1),
        nn.ReLU(),
        *(ResBlock(2 * h) for _ in range(4)),
        nn.Conv1d(2 * h, 4 * h, kernel_size=3, stride=second_stride, padding=1),
        nn.ReLU(),
        *(ResBlock(4 * h) for _ in range(4)),
        nn.Conv1d(4 * h, 4 * h, kernel_size=3, padding=1),
    )


def _decoder(h: int, downsample: int) -> nn.Sequential:
    upsampling: list[nn.Module]
    if downsample == 1:
        upsampling = [nn.Conv1d(4 * h, h, kernel_size=3, padding=1), nn.ReLU()]
    elif downsample == 2:
        upsampling = [nn.ConvTranspose1d(4 * h, h, kernel_size=4, stride=2, padding=1), nn.ReLU()]
    else:
        upsampling = [
            nn.ConvTranspose1d(4 * h, 2 * h, kernel_size=4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose1d(2 * h, h, kernel_size=4, stride=2, padding=1),
            nn.ReLU(),
        ]
    return nn.Sequential(
        ResBlock(4 * h),
        ResBlock(4 * h),
        *upsampling,
        *(ResBlock(h) for _ in range(5)),
        nn.Conv1d(h, h, kernel_size=3, padding=1),
    )


class AffineTransform(nn.Module):
    """Per-dimension affine map of the codebook: ``(1 + s * scale) * w + s * bias``, ``s = 10``.

    Stored as ``scale`` and ``bias`` of shape ``(1, D)``, zero at initialisation
    (identity), exactly as in the original checkpoint.
    """

    def __init__(self, dim: int, lr_scale: float = AFFINE_LR_SCALE) -> None:
        super().__init__()
        self.lr_scale = lr_scale
        self.scale = nn.Parameter(torch.zeros(1, dim))
        self.bias = nn.Parameter(torch.zeros(1, dim))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return (1 + self.lr_scale * self.scale) * weight + self.lr_scale * self.bias

    def inverse(self, vectors: torch.Tensor) -> torch.Tensor:
        """The raw codebook rows whose transform is ``vectors`` (``(N, D)``)."""
        return (vectors - self.lr_scale * self.bias) / (1 + self.lr_scale * self.scale)


class AffineVectorQuantizer(VectorQuantizer):
    """The v1 quantizer: :class:`plutok.quantizers.vq.VectorQuantizer` with the original
    release's codebook storage and search.

    Parameters (original layout): ``codebook.weight`` ``(K, D)``,
    ``affine_transform.scale`` / ``.bias`` ``(1, D)``, and the buffer ``_counts``
    ``(K,)`` (how often each code was picked in training; never used to quantize).
    The code vectors are the affine transform of the rows; the upkeep (k-means, EMA,
    dead codes) works on the code vectors and writes the rows back through the
    inverse. The search computes the whole distance in one block, as the original
    did, so v1 codes stay bit-identical to the original release's.

    Args:
        codebook_size, dim: ``K`` and ``D``.
        training: the quantizer's training settings (``ema``, ``commitment``,
            ``dead_code_steps``, ... of :class:`~plutok.quantizers.vq.VectorQuantizer`);
            a model that only encodes and decodes needs none. Codes are never normalised.
    """

    search_chunk = None
    full_distance = True

    def __init__(self, codebook_size: int, dim: int, training: Mapping[str, Any] | None = None) -> None:
        super().__init__(codebook_size, dim, normalize=False, **(training or {}))

    def _make_codebook(self, codebook_size: int, dim: int, trainable: bool) -> None:
        self.codebook = nn.Embedding(codebook_size, dim)  # type: ignore[assignment]  # the original's key
        self.affine_transform = AffineTransform(dim)
        self.register_buffer("_counts", torch.zeros(codebook_size))
        self.codebook.requires_grad_(trainable)
        self.affine_transform.requires_grad_(trainable)

    def vectors(self) -> torch.Tensor:
        return self.affine_transform(self.codebook.weight)

    def effective_codebook(self) -> torch.Tensor:
        """The code vectors actually used, ``(K, D)`` (the original's name of :meth:`vectors`)."""
        return self.vectors()

    def _rows(self) -> torch.Tensor:
        return self.vectors()

    @torch.no_grad()
    def _set_rows(self, rows: torch.Tensor, index: torch.Tensor | None = None) -> None:
        raw = self.affine_transform.inverse(rows.to(self.codebook.weight))
        if index is None:
            self.codebook.weight.copy_(raw)
        else:
            self.codebook.weight[index] = raw

    @torch.no_grad()
    def upkeep(
        self, latent: torch.Tensor, codes: torch.Tensor, mask: torch.Tensor | None = None
    ) -> dict[str, float]:
        picked = codes.reshape(-1) if mask is None else codes.reshape(-1)[mask.reshape(-1).bool()]
        self._counts += torch.bincount(picked, minlength=self.codebook_size).to(self._counts)
        return super().upkeep(latent, codes, mask)


@dataclass
class VQVAEOutput:
    """Result of :meth:`VQVAE.forward` (torch tensors, batch first).

    Attributes:
        reconstruction: ``(B, C, T)`` decoder output trimmed to the input length.
        codes: ``(B, T')`` int64, ``T' = ceil(T / downsample)``.
        encoded: ``(B, D, T')`` encoder output before quantization.
        quantized: ``(B, D, T')`` code vectors (straight-through gradient to ``encoded``).
        codebook_loss: scalar ``|sg(z) - e|^2`` (moves the codes to the encoder outputs).
        commitment_loss: scalar ``|z - sg(e)|^2``, unweighted (moves the encoder outputs to their codes).
        perplexity, usage: scalar batch statistics of the codes (no gradient).
    """

    reconstruction: torch.Tensor
    codes: torch.Tensor
    encoded: torch.Tensor
    quantized: torch.Tensor
    codebook_loss: torch.Tensor
    commitment_loss: torch.Tensor
    perplexity: torch.Tensor
    usage: torch.Tensor


class VQVAE(nn.Module):
    """Conv VQ-VAE over frame features; see the module docstring for the architecture.

    ``codebook_training``: the quantizer's training settings (:class:`AffineVectorQuantizer`);
    ``None`` for a model that only encodes and decodes.
    """

    def __init__(self, config: VQVAEConfig, codebook_training: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.config = config
        h = config.width
        if config.width != config.feature_dim:
            self.input_proj = nn.Conv1d(config.feature_dim, h, kernel_size=1)
            self.output_proj = nn.Conv1d(h, config.feature_dim, kernel_size=1)
        else:
            self.input_proj = None
            self.output_proj = None
        self.encoder = _encoder(h, config.downsample)
        if config.latent_dim:
            self.latent_in = nn.Conv1d(4 * h, config.latent_dim, kernel_size=1)
            self.latent_out = nn.Conv1d(config.latent_dim, 4 * h, kernel_size=1)
        else:
            self.latent_in = None
            self.latent_out = None
        self.vq_layer = AffineVectorQuantizer(config.codebook_size, config.code_dim, codebook_training)
        self.decoder = _decoder(h, config.downsample)
        self.eval()

    # ----- contract ---------------------------------------------------------------------------
    @property
    def feature_dim(self) -> int:
        """Channels ``C`` of the features this model reads and writes."""
        return self.config.feature_dim

    @property
    def codebook_size(self) -> int:
        """Number of codes; valid codes are ``0 .. codebook_size - 1``."""
        return self.config.codebook_size

    @property
    def downsample(self) -> int:
        """Feature frames per code."""
        return self.config.downsample

    @property
    def quantizer(self) -> AffineVectorQuantizer:
        return self.vq_layer

    # ----- torch level ------------------------------------------------------------------------
    def encode_tensor(self, features: torch.Tensor) -> torch.Tensor:
        """Encoder output ``(B, D, ceil(T / downsample))`` for features ``(B, C, T)``."""
        hidden = features if self.input_proj is None else self.input_proj(features)
        encoded = self.encoder(hidden)
        if self.latent_in is not None:
            encoded = self.latent_in(encoded)
        if self.config.normalize_latents:
            encoded = F.normalize(encoded, dim=1)
        return encoded

    def decode_tensor(self, quantized: torch.Tensor) -> torch.Tensor:
        """Features ``(B, C, downsample * T')`` from code vectors ``(B, D, T')``."""
        if self.latent_out is not None:
            quantized = self.latent_out(quantized)
        hidden = self.decoder(quantized)
        return hidden if self.output_proj is None else self.output_proj(hidden)

    def forward(self, features: torch.Tensor, autocast_dtype: torch.dtype | None = None) -> VQVAEOutput:
        """Encode, quantize and decode a batch ``(B, C, T)``; see :class:`VQVAEOutput`.

        ``autocast_dtype`` (training on a GPU): encoder and decoder run under
        ``torch.autocast`` in that dtype; the quantizer (nearest-code search and the
        codebook losses) always runs in float32, and so do the returned tensors.
        """

        def mixed():
            if autocast_dtype is None:
                return contextlib.nullcontext()
            return torch.autocast(features.device.type, dtype=autocast_dtype)

        with mixed():
            encoded = self.encode_tensor(features)
        encoded = encoded.float()
        quantized = self.vq_layer(encoded)
        with mixed():
            decoded = self.decode_tensor(quantized.quantized)
        reconstruction = decoded[..., : features.shape[-1]].float()
        return VQVAEOutput(
            reconstruction=reconstruction,
            codes=quantized.codes,
            encoded=encoded,
            quantized=quantized.quantized,
            codebook_loss=quantized.terms["codebook"],
            commitment_loss=quantized.terms["commitment"],
            perplexity=quantized.perplexity,
            usage=quantized.usage,
        )

    # ----- numpy level ------------------------------------------------------------------------
    def _device(self) -> torch.device:
        return self.vq_layer.codebook.weight.device

    @torch.no_grad()
    def encode(self, features: np.ndarray) -> np.ndarray:
        """Codes of one utterance.

        Args:
            features: float ``(C, T)`` with ``C == feature_dim`` and ``T >= downsample``.
        Returns:
            int64 ``(ceil(T / downsample),)`` codes in ``[0, codebook_size)``.
        Raises:
            AudioError: fewer than ``downsample`` frames, or NaN/inf values.
            ModelError: the features have the wrong number of channels.
        """
        from plutok.codec.base import check_features

        array = check_features(features, self.feature_dim, self.downsample, "VQ-VAE", "backbone")
        was_training = self.training
        self.eval()
        try:
            tensor = torch.as_tensor(np.ascontiguousarray(array, dtype=np.float32), device=self._device())
            encoded = self.encode_tensor(tensor[None])
            flat = encoded[0].t()
            codes = self.vq_layer.nearest(flat)
        finally:
            self.train(was_training)
        return codes.cpu().numpy().astype(np.int64)

    def check_codes(self, codes: Sequence[int] | np.ndarray) -> np.ndarray:
        """Validate codes and return them as int64 ``(N,)``; raises :class:`TokenError`."""
        from plutok.codec.base import check_codes

        return check_codes(codes, self.codebook_size)

    @torch.no_grad()
    def decode(self, codes: Sequence[int] | np.ndarray) -> np.ndarray:
        """Features from codes.

        Args:
            codes: integer ``(N,)`` with values in ``[0, codebook_size)``, ``N >= 1``.
        Returns:
            float32 ``(C, downsample * N)``.
        Raises:
            TokenError: empty input, wrong shape or type, or a code out of range.
        """
        array = self.check_codes(codes)
        was_training = self.training
        self.eval()
        try:
            tensor = torch.as_tensor(array, device=self._device())[None]
            decoded = self.decode_tensor(self.vq_layer.dequantize(tensor))
        finally:
            self.train(was_training)
        return decoded[0].cpu().numpy().astype(np.float32)

    # ----- I/O --------------------------------------------------------------------------------
    def load_weights(self, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
        """Load a state dict, raising :class:`ModelError` that lists the mismatches."""
        problem = describe_mismatch(
            {k: tuple(v.shape) for k, v in self.state_dict().items()},
            {k: tuple(v.shape) for k, v in state_dict.items()},
        )
        if problem:
            raise ModelError(f"{source} does not match the VQ-VAE architecture: {problem}")
        self.load_state_dict({key: value.float() for key, value in state_dict.items()})

    @classmethod
    def from_original(cls, path: str | os.PathLike) -> VQVAE:
        """Load an original Plutok checkpoint (``outputs/vqvae/model.pth``, a bare state dict).

        ``feature_dim`` and ``codebook_size`` are read from the tensor shapes; the
        original always downsamples by 2.
        """
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"VQ-VAE checkpoint not found: {path}")
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # pickle, zip and unsafe-global errors all mean "not a checkpoint"
            raise ModelError(f"cannot read VQ-VAE checkpoint {path}: {error}") from error
        if isinstance(loaded, Mapping) and not any(isinstance(v, torch.Tensor) for v in loaded.values()):
            for wrapper in ("model", "state_dict"):
                if isinstance(loaded.get(wrapper), Mapping):
                    loaded = loaded[wrapper]
                    break
        if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
            raise ModelError(f"{path} is not a VQ-VAE state dict")
        config = _infer_original_config(loaded, str(path))
        model = cls(config)
        model.load_weights(loaded, source=str(path))
        return model

    def save(self, directory: str | os.PathLike, write_config: bool = True) -> Path:
        """Write ``vqvae.safetensors`` (config also in its metadata) and ``vqvae.json`` to ``directory``.

        Weights whose values are all exactly representable in float16 (see
        :meth:`round_to_half`) are stored as float16, halving the file without
        changing a single value; everything else is stored as float32.

        Args:
            write_config: also write ``vqvae.json`` (a full model directory keeps the
                VQ-VAE settings in its own ``config.json`` instead).
        Returns:
            The path of the weights file.
        """
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config_text = json.dumps(self.config.to_dict(), indent=2, sort_keys=True)
        from plutok.weights import half_where_exact

        tensors = half_where_exact(self.state_dict())
        weights = directory / WEIGHTS_NAME
        with atomic_path(weights) as temporary:
            save_file(tensors, str(temporary), metadata={_CONFIG_METADATA_KEY: config_text, "format": "pt"})
        if write_config:
            atomic_write_text(directory / CONFIG_NAME, config_text + "\n")
        return weights

    def round_to_half(self) -> VQVAE:
        """Round every weight to the nearest float16 value (kept as float32), so it saves at half size."""
        from plutok.weights import round_to_half

        return round_to_half(self)

    @classmethod
    def load(cls, path: str | os.PathLike, config: VQVAEConfig | Mapping[str, Any] | None = None) -> VQVAE:
        """Load a model written by :meth:`save`.

        Args:
            path: the directory given to :meth:`save`, or the ``.safetensors`` file itself.
            config: overrides the stored configuration (``vqvae.json`` beside the
                weights, else the safetensors metadata).
        """
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        weights = path / WEIGHTS_NAME if path.is_dir() else path
        if not weights.is_file():
            raise ModelError(f"VQ-VAE weights not found: {weights}")
        try:
            with safe_open(str(weights), framework="pt", device="cpu") as handle:
                metadata = handle.metadata() or {}
                state_dict = {key: handle.get_tensor(key) for key in handle.keys()}
        except (SafetensorError, OSError, ValueError) as error:
            raise ModelError(f"cannot read VQ-VAE weights {weights}: {error}") from error
        if config is None:
            config_file = weights.parent / CONFIG_NAME
            try:
                if config_file.is_file():
                    config = json.loads(config_file.read_text(encoding="utf-8"))
                elif _CONFIG_METADATA_KEY in metadata:
                    config = json.loads(metadata[_CONFIG_METADATA_KEY])
                else:
                    config = _infer_original_config(state_dict, str(weights))
            except json.JSONDecodeError as error:
                raise ModelError(f"corrupt VQ-VAE config beside {weights}: {error}") from error
        if not isinstance(config, VQVAEConfig):
            config = VQVAEConfig.from_dict(config)
        model = cls(config)
        model.load_weights(state_dict, source=str(weights))
        return model


def _infer_original_config(state_dict: Mapping[str, torch.Tensor], source: str) -> VQVAEConfig:
    for key in ("encoder.0.conv.weight", "vq_layer.codebook.weight"):
        if key not in state_dict or state_dict[key].ndim < 2:
            raise ModelError(f"{source} is not a Plutok VQ-VAE checkpoint: no usable {key}")
    feature_dim = int(state_dict["encoder.0.conv.weight"].shape[0])
    codebook_size = int(state_dict["vq_layer.codebook.weight"].shape[0])
    return VQVAEConfig(feature_dim=feature_dim, codebook_size=codebook_size, downsample=2)


def encoded_length(frames: int, downsample: int) -> int:
    """Number of codes for ``frames`` feature frames: ``ceil(frames / downsample)``."""
    return math.ceil(frames / downsample)
