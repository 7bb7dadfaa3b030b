"""OpenVoice tone-color converter as a Plutok backbone (docs/openvoice.md).

``features``:  waveform -> linear spectrogram -> posterior encoder (mean, or a
sample when ``tau > 0``) -> forward flow conditioned on the speaker -> ``z_p``.
``synthesize``: ``z_p`` -> reverse flow conditioned on the (target) speaker ->
HiFi-GAN generator -> waveform. ``speaker_embedding``: reference encoder over
the spectrogram. V2 checkpoints (``zero_g: true``) feed zeros instead of the
speaker to the posterior encoder and the generator; V1 checkpoints do not.

Reads the published on-disk format (``config.json`` + ``checkpoint.pth`` whose
``"model"`` entry is the state dict, weight-normalised convs as
``weight_g``/``weight_v``) and writes Plutok's own: ``backbone.safetensors``
with weight norm already folded into plain ``weight`` tensors, and the
hyper-parameters in :meth:`OpenVoiceBackbone.config`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from plutok.errors import AudioError, ModelError
from plutok.legacy.backbones.base import Backbone
from plutok.legacy.backbones.openvoice_modules import (
    ConverterConfig,
    ToneColorConverter,
    checkpoint_layout,
    fold_weight_norm,
    linear_spectrogram,
)
from plutok.weights import describe_mismatch, load_module_weights, weights_in_directory

__all__ = ["OpenVoiceBackbone", "WEIGHTS_FILE"]

WEIGHTS_FILE = "backbone.safetensors"


class OpenVoiceBackbone(Backbone):
    """The OpenVoice tone-color converter: 22.05 kHz audio <-> ``z_p`` ``(inter, frames)`` + speaker ``(gin,)``.

    Build with :meth:`from_checkpoint` (original OpenVoice files) or :meth:`from_config`
    (a saved Plutok model directory).
    """

    name = "openvoice"

    def __init__(self, cfg: ConverterConfig, model: ToneColorConverter):
        self.cfg = cfg
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike) -> OpenVoiceBackbone:
        """Load an original OpenVoice converter.

        Args:
            path: directory with ``config.json`` and ``checkpoint.pth``, or the path of the
                ``.pth`` file itself (``config.json`` must sit next to it).
        Raises:
            ModelError: missing/unreadable files, a config that is not a converter's, or a
                state dict that does not match the config (names the first offending keys).
        """
        path = Path(path)
        ckpt_path = path / "checkpoint.pth" if path.is_dir() else path
        config_path = ckpt_path.parent / "config.json"
        for p in (ckpt_path, config_path):
            if not p.is_file():
                raise ModelError(f"OpenVoice converter file not found: {p}")
        try:
            raw_config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"cannot read {config_path}: {exc}") from exc
        try:
            cfg = ConverterConfig.from_original(raw_config)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelError(f"{config_path} is not an OpenVoice converter config: {exc!r}") from exc
        try:
            ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for corrupt/foreign files
            raise ModelError(f"cannot load {ckpt_path} as a PyTorch checkpoint: {exc}") from exc
        state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ModelError(f"{ckpt_path} holds no state dict (expected a dict with a 'model' entry)")
        model = ToneColorConverter(cfg)
        problem = describe_mismatch(checkpoint_layout(model), {k: tuple(v.shape) for k, v in state.items()})
        if problem:
            raise ModelError(f"{ckpt_path} does not match {config_path}: {problem}")
        model.load_state_dict(fold_weight_norm(model, state))
        return cls(cfg, model)

    @classmethod
    def random(cls, cfg: ConverterConfig | None = None, seed: int = 0) -> OpenVoiceBackbone:
        """Randomly initialised converter (published sizes by default), for tests and speed measurements."""
        cfg = cfg or ConverterConfig()
        cfg.validate()
        torch.manual_seed(seed)
        return cls(cfg, ToneColorConverter(cfg))

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "weights": WEIGHTS_FILE, "converter": self.cfg.to_dict()}

    @classmethod
    def from_config(cls, config: dict[str, Any], directory: Path | None = None) -> OpenVoiceBackbone:
        """Rebuild from :meth:`config` and ``directory/backbone.safetensors`` (folded weights)."""
        if directory is None:
            raise ModelError("the openvoice backbone needs the model directory that holds its weights")
        try:
            cfg = ConverterConfig.from_dict(config["converter"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"bad openvoice backbone config: {exc!r}") from exc
        model = ToneColorConverter(cfg)
        weights = weights_in_directory(Path(directory), config.get("weights", WEIGHTS_FILE), "backbone")
        load_module_weights(model, weights, "backbone")
        return cls(cfg, model)

    def weights_digest(self) -> str:
        from plutok.digests import state_dict_sha256

        return state_dict_sha256(self.model.state_dict())

    def save_weights(self, directory: Path) -> None:
        """Write ``backbone.safetensors``: the folded (plain ``weight``) state dict, float32."""
        from safetensors.torch import save_file

        from plutok.files import atomic_path

        state = {k: v.detach().contiguous() for k, v in self.model.state_dict().items()}
        with atomic_path(Path(directory) / WEIGHTS_FILE) as tmp:
            save_file(state, str(tmp))

    # ------------------------------------------------------------------ Backbone properties

    @property
    def sample_rate(self) -> int:
        return self.cfg.sampling_rate

    @property
    def hop_length(self) -> int:
        return self.cfg.hop_length

    @property
    def feature_dim(self) -> int:
        return self.cfg.inter_channels

    @property
    def speaker_dim(self) -> int:
        return self.cfg.gin_channels

    @property
    def zero_g(self) -> bool:
        """True for V2 checkpoints: no speaker input to the posterior encoder and the generator."""
        return self.cfg.zero_g

    # ------------------------------------------------------------------ inference

    def _wav_tensor(self, wav: np.ndarray) -> torch.Tensor:
        wav = np.asarray(wav)
        if wav.ndim != 1:
            raise AudioError(f"waveform must be 1-D (samples,), got shape {wav.shape}")
        if not np.issubdtype(wav.dtype, np.floating):
            raise AudioError(f"waveform must be float samples, got dtype {wav.dtype}")
        if wav.shape[0] < self.cfg.filter_length:
            raise AudioError(
                f"audio too short: {wav.shape[0]} samples, need at least {self.cfg.filter_length} "
                f"({self.cfg.filter_length / self.sample_rate * 1000:.0f} ms at {self.sample_rate} Hz)"
            )
        if not np.all(np.isfinite(wav)):
            raise AudioError("audio contains NaN or infinite samples")
        return torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)).unsqueeze(0)

    def _speaker_tensor(self, speaker: np.ndarray) -> torch.Tensor:
        speaker = np.asarray(speaker)
        if speaker.shape != (self.speaker_dim,):
            raise ModelError(f"speaker vector must have shape ({self.speaker_dim},), got {speaker.shape}")
        if not np.all(np.isfinite(speaker)):
            raise ModelError("speaker vector contains NaN or infinite values")
        return torch.from_numpy(np.ascontiguousarray(speaker, dtype=np.float32)).view(1, -1, 1)

    def _spec(self, wav: np.ndarray) -> torch.Tensor:
        c = self.cfg
        return linear_spectrogram(self._wav_tensor(wav), c.filter_length, c.hop_length, c.win_length)

    def spectrogram(self, wav: np.ndarray) -> np.ndarray:
        """Linear magnitude spectrogram, float32 ``(filter_length // 2 + 1, samples // hop_length)``."""
        with torch.inference_mode():
            return self._spec(wav)[0].numpy()

    def speaker_embedding(self, wav: np.ndarray) -> np.ndarray:
        """Reference-encoder embedding of ``wav`` (float32 ``(samples,)``): float32 ``(gin,)``."""
        with torch.inference_mode():
            spec = self._spec(wav)
            return self.model.ref_enc(spec.transpose(1, 2))[0].numpy()

    def features(
        self, wav: np.ndarray, speaker: np.ndarray, tau: float = 0.0, seed: int | None = None
    ) -> np.ndarray:
        """``z_p``: float32 ``(inter_channels, samples // hop_length)``.

        Args:
            wav: float32 ``(samples,)`` at ``sample_rate``.
            speaker: ``(gin,)`` from :meth:`speaker_embedding` of the same speaker.
            tau: posterior sampling temperature; 0 (default) takes the mean, deterministic.
                The original Plutok samples with 0.3: ``z = m + randn * tau * exp(logs)``.
            seed: seeds the noise when ``tau > 0`` (same seed, same result); None draws
                from torch's global generator.
        """
        if tau < 0:
            raise ValueError(f"tau must be >= 0, got {tau}")
        generator = None
        if tau > 0 and seed is not None:
            generator = torch.Generator().manual_seed(int(seed))
        with torch.inference_mode():
            spec = self._spec(wav)
            z_p = self.model.encode(spec, self._speaker_tensor(speaker), tau=tau, generator=generator)
            return z_p[0].numpy()

    def synthesize(
        self, features: np.ndarray, speaker: np.ndarray, chunk_frames: int | None = None
    ) -> np.ndarray:
        """Waveform float32 ``(frames * hop_length,)`` from ``z_p`` ``(inter_channels, frames)``
        spoken by ``speaker`` ``(gin,)``. One pass: ``chunk_frames`` is ignored (the reverse
        flow's WaveNet sees the whole sequence)."""
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[0] != self.feature_dim or features.shape[1] == 0:
            raise ModelError(f"features must have shape ({self.feature_dim}, frames>0), got {features.shape}")
        if not np.all(np.isfinite(features)):
            raise ModelError("features contain NaN or infinite values")
        with torch.inference_mode():
            z_p = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).unsqueeze(0)
            return self.model.decode(z_p, self._speaker_tensor(speaker))[0].numpy()
