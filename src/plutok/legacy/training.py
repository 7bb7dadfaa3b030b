"""Training the VQ-VAE on backbone features (the ``train-vq`` stage).

The loop is the shared :class:`~plutok.training.trainer.Trainer`: this module adds the
v1 model's loss (:class:`VQVAETraining`), its crops (:class:`SegmentSampler`) and its
dev loss over whole utterances (:func:`evaluate`). The codebook upkeep is the v1
quantizer's own, which is the v2 one (:class:`plutok.legacy.vqvae.AffineVectorQuantizer`, a
:class:`plutok.quantizers.vq.VectorQuantizer`), behind the trainer's quantizer hooks. Under ``torchrun`` every rank
runs on its own part of the data as the trainer describes (gradients averaged over
ranks, ``batch_size`` per rank, each rank crops with seed ``seed + rank``, codebook
upkeep on all ranks' encoder outputs with one random generator and rank 0's codebook
broadcast after every update, so the replicas are equal bit for bit; the run ends by
comparing a digest of every rank's state). On CUDA the loss runs under
``torch.autocast`` (bf16, or fp16 with loss scaling) except the quantizer, whose
nearest-code search stays in float32.

Codebook training keeps every code in use:

* **k-means initialisation**: before the first step, ``kmeans_init_vectors`` encoder
  outputs of a few batches are clustered (k-means++ seeding, then Lloyd iterations)
  and the codebook is set to the centroids (:func:`plutok.quantizers.vq.kmeans`).
* **dead-code replacement**: a code not picked for ``dead_code_steps`` steps is
  moved onto a random vector from a replay buffer of recent encoder outputs
  (:class:`plutok.quantizers.vq.CodeReplay`).
* **two codebook update rules** (``TrainConfig.kmeans``):
  ``False`` (default) - gradient VQ-VAE: straight-through estimator, the
  codebook (and its affine transform, as in the original) learns from the
  codebook loss ``|sg(z) - e|^2``; the encoder gets ``commitment_weight * |z - sg(e)|^2``.
  ``True`` - the original's "plain k-means quantizer" read as *online k-means*:
  the codebook receives no gradients; each step it moves to the exponential
  moving average of the encoder vectors assigned to each code (EMA k-means,
  decay ``ema_decay``, the v2 quantizer's ``ema`` rule); the encoder still gets the
  commitment loss.
Both store the codebook in the same layout (``codebook.weight`` plus the
identity-initialised affine transform), so a trained model loads like an original one.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from plutok import distributed
from plutok.codec.base import CodecBatch
from plutok.errors import AudioError, ModelError
from plutok.legacy.vqvae import VQVAE, AffineVectorQuantizer, VQVAEConfig, encoded_length
from plutok.quantizers.vq import kmeans
from plutok.settings import PRECISIONS, TrainerConfig, warmup_cosine
from plutok.training.objectives import VQVAECodecObjective, reconstruction_loss
from plutok.training.trainer import Callback, Trainer, training_device

__all__ = ["SegmentSampler", "TrainConfig", "kmeans", "train_vqvae"]


#: Earlier names of :class:`TrainConfig` fields, read by :meth:`TrainConfig.from_dict`.
_RENAMED = {
    "log_interval": "log_every",
    "eval_interval": "eval_every",
    "checkpoint_interval": "checkpoint_every",
}


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one VQ-VAE training run (the architecture is in :class:`VQVAEConfig`).

    Attributes:
        steps: total optimizer steps (a resumed run continues up to this number).
        batch_size: segments per step and rank (the global batch is ``batch_size * world_size``).
        segment_frames: feature frames per random crop.
        learning_rate: peak AdamW learning rate; linear warm-up over ``warmup_steps``,
            then cosine decay to ``min_lr_ratio * learning_rate`` at ``steps``.
        weight_decay: AdamW weight decay of conv weights (never of the codebook or biases).
        grad_clip: max global gradient norm (0 disables clipping).
        commitment_weight: weight of the commitment loss.
        seed: seeds weight initialisation, crops, k-means and code replacement.
        log_every: steps between progress-bar/metrics updates.
        eval_every: steps between dev-set evaluations (0: only at the end).
        checkpoint_every: steps between checkpoints (0: only at the end).
        keep_checkpoints: how many step checkpoints to keep on disk.
        kmeans: EMA k-means codebook instead of gradient codebook (see module docstring).
        ema_decay: decay of the EMA k-means statistics.
        kmeans_init: initialise the codebook by k-means on encoder outputs.
        kmeans_init_vectors: encoder vectors to sample for the initialisation.
        kmeans_iterations: Lloyd iterations of the initialisation.
        dead_code_steps: replace codes unused for this many steps (0 disables).
        replay_size: encoder vectors kept for dead-code replacement.
        device: torch device, e.g. ``"cpu"`` or ``"cuda"`` (under torchrun: GPU ``LOCAL_RANK``).
        precision: ``"auto"`` (bf16 autocast on CUDA where supported, else fp16 with loss
            scaling; float32 on CPU), ``"fp32"``, ``"bf16"`` or ``"fp16"`` (CUDA only).
    """

    steps: int = 20000
    batch_size: int = 16
    segment_frames: int = 128
    learning_rate: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int = 500
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    commitment_weight: float = 0.25
    seed: int = 0
    log_every: int = 50
    eval_every: int = 1000
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    kmeans: bool = False
    ema_decay: float = 0.99
    kmeans_init: bool = True
    kmeans_init_vectors: int = 8192
    kmeans_iterations: int = 10
    dead_code_steps: int = 100
    replay_size: int = 8192
    device: str = "cpu"
    precision: str = "auto"

    def __post_init__(self) -> None:
        positive = (
            "steps",
            "batch_size",
            "segment_frames",
            "log_every",
            "keep_checkpoints",
            "replay_size",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be at least 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"TrainConfig.learning_rate must be positive, got {self.learning_rate}")
        if not 0 < self.ema_decay < 1:
            raise ValueError(f"TrainConfig.ema_decay must be in (0, 1), got {self.ema_decay}")
        for name in ("warmup_steps", "eval_every", "checkpoint_every", "dead_code_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must not be negative, got {getattr(self, name)}")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"TrainConfig.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Settings from a dict; the names of 0.6 and earlier (``log_interval``, ...) are read too."""
        data = {_RENAMED.get(key, key): value for key, value in data.items()}
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training settings: {', '.join(unknown)}")
        return cls(**dict(data))

    def learning_rate_at(self, step: int) -> float:
        """Learning rate for the 0-based ``step``."""
        return warmup_cosine(step, self.steps, self.warmup_steps, self.learning_rate, self.min_lr_ratio)

    def codebook_training(self) -> dict[str, Any]:
        """The quantizer's training settings (:class:`~plutok.legacy.vqvae.AffineVectorQuantizer`) of this run.

        Its generator is seeded ``seed + 1`` (weights and crops use ``seed``), the same on every rank.
        """
        return {
            "ema": self.kmeans,
            "commitment": self.commitment_weight,
            "ema_decay": self.ema_decay,
            "dead_code_steps": self.dead_code_steps,
            "kmeans_iterations": self.kmeans_iterations,
            "replay_size": self.replay_size,
            "seed": self.seed + 1,
        }


# ----- data ---------------------------------------------------------------------------------------


class SegmentSampler:
    """Random fixed-length crops of utterances, every frame equally likely.

    Utterances shorter than ``segment_frames`` are left out. Training gives each rank
    its own ``seed`` (``seed + rank``) so ranks see different crops. Utterances may be
    float16 (half the memory); batches are float32.
    """

    def __init__(self, utterances: Sequence[np.ndarray], segment_frames: int, seed: int) -> None:
        self.segment_frames = segment_frames
        self.utterances = [u for u in utterances if u.shape[1] >= segment_frames]
        if not self.utterances:
            longest = max((u.shape[1] for u in utterances), default=0)
            raise AudioError(
                f"no training utterance has {segment_frames} feature frames (longest: {longest});"
                " lower segment_frames or add longer audio"
            )
        positions = np.array([u.shape[1] - segment_frames + 1 for u in self.utterances], dtype=np.float64)
        self.weights = positions / positions.sum()
        self.rng = np.random.default_rng(seed)

    def batch(self, batch_size: int) -> np.ndarray:
        """float32 ``(batch_size, C, segment_frames)``."""
        chosen = self.rng.choice(len(self.utterances), size=batch_size, p=self.weights)
        crops = []
        for index in chosen:
            utterance = self.utterances[index]
            start = int(self.rng.integers(0, utterance.shape[1] - self.segment_frames + 1))
            crops.append(utterance[:, start : start + self.segment_frames])
        return np.stack(crops).astype(np.float32, copy=False)

    def state(self) -> dict[str, Any]:
        return self.rng.bit_generator.state

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.rng.bit_generator.state = dict(state)


def _check_features(utterances: Sequence[np.ndarray], feature_dim: int, what: str) -> list[np.ndarray]:
    checked = []
    for number, utterance in enumerate(utterances):
        array = np.asarray(utterance)
        if array.dtype not in (np.float16, np.float32):
            array = array.astype(np.float32)
        if array.ndim != 2 or array.shape[0] != feature_dim:
            raise ModelError(
                f"{what} utterance {number} has shape {array.shape}, expected ({feature_dim}, frames)"
            )
        if not np.isfinite(array).all():
            raise AudioError(f"{what} utterance {number} contains NaN or inf")
        checked.append(array)
    return checked


# ----- loop ---------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(model: VQVAE, utterances: Sequence[np.ndarray], device: torch.device) -> dict[str, float]:
    """Frame-weighted reconstruction loss and code statistics over whole utterances.

    In a process group every rank must call this with its own part of the held-out
    set; the result is over all parts (the same on every rank).
    """
    was_training = model.training
    model.eval()
    total_loss, total_frames = 0.0, 0
    histogram = torch.zeros(model.codebook_size, device=device)
    try:
        for utterance in utterances:
            if utterance.shape[1] < model.downsample:
                continue
            features = torch.from_numpy(utterance).to(device, torch.float32)[None]
            output = model(features)
            total_loss += float(reconstruction_loss(output.reconstruction, features)) * utterance.shape[1]
            total_frames += utterance.shape[1]
            histogram += torch.bincount(output.codes.flatten(), minlength=model.codebook_size)
    finally:
        model.train(was_training)
    if distributed.is_initialized():
        totals = distributed.all_reduce_sum(
            torch.tensor([total_loss, float(total_frames)], dtype=torch.float64, device=device)
        )
        total_loss, total_frames = float(totals[0]), int(totals[1])
        distributed.all_reduce_sum(histogram)
    if total_frames == 0:
        return {}
    probabilities = histogram / histogram.sum()
    entropy = -(probabilities * probabilities.clamp(min=1e-12).log()).sum()
    return {
        "dev_loss": total_loss / total_frames,
        "dev_usage": float((histogram > 0).float().mean()),
        "dev_perplexity": float(entropy.exp()),
    }


class SampledCrops:
    """:class:`SegmentSampler` crops as trainer batches (input and target are the same features)."""

    def __init__(self, sampler: SegmentSampler, downsample: int) -> None:
        self.sampler = sampler
        self.codes = encoded_length(sampler.segment_frames, downsample)

    def sample(self, batch_size: int) -> CodecBatch:
        crops = torch.from_numpy(self.sampler.batch(batch_size))
        return CodecBatch(crops, crops, torch.zeros(batch_size, 0), torch.ones(batch_size, self.codes))

    def fixed_batches(self, batch_size: int, limit: int | None = None) -> list[CodecBatch]:
        return []  # the dev loss is over whole utterances (:func:`evaluate`)

    def state(self) -> dict[str, Any]:
        return self.sampler.state()

    def set_state(self, state: dict[str, Any]) -> None:
        self.sampler.set_state(state)

    def restart(self, seed: list[int]) -> None:
        self.sampler.rng = np.random.default_rng(seed)


class VQVAETraining(nn.Module):
    """A :class:`VQVAE` with its training loss, for :class:`~plutok.training.trainer.Trainer`.

    Loss: the v1 codec's objective (:class:`~plutok.training.objectives.VQVAECodecObjective`)
    with ``commitment_weight``, without the codebook loss when the codebook is EMA k-means
    (``TrainConfig.kmeans``).
    """

    #: The codebook and its affine transform are never weight-decayed.
    no_weight_decay = ("vqvae.vq_layer.",)

    def __init__(self, vqvae: VQVAE, config: TrainConfig) -> None:
        super().__init__()
        self.vqvae = vqvae
        self.train_config = config
        self.objective = VQVAECodecObjective(config.commitment_weight, codebook_gradient=not config.kmeans)
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def quantizer(self) -> AffineVectorQuantizer:
        """The trainer's quantizer hook (a property: its weights are the VQ-VAE's, saved once)."""
        return self.vqvae.vq_layer

    def latent(self, features: torch.Tensor) -> torch.Tensor:
        return self.vqvae.encode_tensor(features)

    def loss(self, batch: CodecBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        output = self.vqvae(batch.analysis)
        self._last = (output.encoded.detach(), output.codes)
        return self.objective.score(output, batch.target)

    def quantizer_parts(self):
        if self._last is None:
            return None, None, None, None
        return self.quantizer, *self._last, None

    def config(self) -> dict[str, Any]:
        return {"name": "vqvae-v1", "vqvae": self.vqvae.config.to_dict()}


def _trainer_config(config: TrainConfig, code_frames: int, world_size: int) -> TrainerConfig:
    """The shared trainer's schedule for a v1 run (the fields of the same names)."""
    shared = {field.name for field in dataclasses.fields(TrainerConfig)} & set(config.to_dict())
    per_rank = -(-config.kmeans_init_vectors // world_size)
    return TrainerConfig(
        **{name: getattr(config, name) for name in shared},
        init_batches=-(-per_rank // (config.batch_size * code_frames)) if config.kmeans_init else 0,
        init_vectors=config.kmeans_init_vectors,
    )


def train_vqvae(
    train_features: Sequence[np.ndarray],
    dev_features: Sequence[np.ndarray],
    model_config: VQVAEConfig,
    train_config: TrainConfig,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    callback: Callback | None = None,
) -> tuple[VQVAE, dict[str, Any]]:
    """Train a VQ-VAE on feature utterances, on the shared :class:`~plutok.training.trainer.Trainer`.

    In a ``torch.distributed`` process group (see :mod:`plutok.distributed`) every rank
    calls this with its own part of the training and dev utterances; see the module
    docstring for what is shared.

    Args:
        train_features: utterances, each float ``(feature_dim, frames)`` (float16 is kept as is).
        dev_features: held-out utterances (may be empty) for the dev loss.
        model_config: architecture; ``feature_dim`` must match the features.
        train_config: see :class:`TrainConfig`.
        checkpoint_dir: the run folder: step checkpoints go to ``checkpoints/`` in it
            (safetensors + JSON), the final model (``vqvae.safetensors`` + ``vqvae.json``)
            into it (rank 0 only); ``None`` writes nothing.
        resume: continue from the newest checkpoint in ``checkpoint_dir`` (fresh start if none).
        progress: show a tqdm bar and the logged metrics (rank 0 only).
        callback: ``callback(step, metrics)`` after every step (after its checkpoint, if one
            was due); ``False`` stops training there, with a checkpoint and without the
            final model (every rank must return the same). Tests use it to kill a run.
    Returns:
        The trained model (eval mode, on the training device) and metrics: ``step``,
        ``train_loss``, ``train_reconstruction_loss``, ``perplexity``, ``usage`` (means over
        the last logging window and all ranks), ``active_codes``, ``dead_code_resets``, ``dev_loss``,
        ``dev_usage``, ``dev_perplexity`` (``None`` without dev data), ``world_size``,
        ``state_digests`` (one per rank; all equal unless the ranks diverged) and
        ``history`` (one dict per log/eval point).
    """
    config = train_config
    ctx = distributed.context()
    train = _check_features(train_features, model_config.feature_dim, "training")
    dev = _check_features(dev_features, model_config.feature_dim, "dev")
    if not train:
        raise AudioError("no training utterances")
    directory = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if resume and directory is None:
        raise ValueError("resume=True needs a checkpoint_dir")
    device = training_device(config.device)
    # Whether any rank has dev data decides the (collective) evaluations.
    has_dev = bool(distributed.all_reduce_sum(torch.tensor([len(dev)], device=device)).item())

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = VQVAE(model_config, codebook_training=config.codebook_training())
    model.to(device)
    sampler = SegmentSampler(train, config.segment_frames, seed=config.seed + ctx.rank)
    code_frames = encoded_length(config.segment_frames, model_config.downsample)
    trainee = VQVAETraining(model, config)
    trainer = Trainer(
        trainee,
        SampledCrops(sampler, model_config.downsample),
        None,
        _trainer_config(config, code_frames, ctx.world_size),
        directory,
        callback=callback,
        log=None if progress else (lambda line: None),
        evaluate=(lambda: evaluate(model, dev, device)) if has_dev else (lambda: {}),
        progress=progress,
    )
    trainer.setup(resume=resume)
    trainer.run()
    model.eval()
    history = trainer.history
    if trainer.step_number < config.steps:
        return model, {
            "step": trainer.step_number,
            "stopped": True,
            "world_size": ctx.world_size,
            "history": history,
        }
    if directory is not None:
        if ctx.is_writer:
            model.save(directory)
        distributed.barrier()
    digests = trainer.replica_digests()
    if len(set(digests)) > 1 and ctx.is_writer:
        import warnings

        warnings.warn(f"the ranks' models differ after training (digests {digests})", stacklevel=2)
    last = next((entry for entry in reversed(history) if "loss" in entry), {})
    dev_metrics = next((entry for entry in reversed(history) if "dev_loss" in entry), {})
    metrics: dict[str, Any] = {
        "step": trainer.step_number,
        "train_loss": last.get("loss"),
        "train_reconstruction_loss": last.get("reconstruction"),
        "perplexity": last.get("perplexity"),
        "usage": last.get("usage"),
        "active_codes": last.get("active"),
        "dead_code_resets": model.vq_layer.total_resets,
        "dev_loss": dev_metrics.get("dev_loss"),
        "dev_usage": dev_metrics.get("dev_usage"),
        "dev_perplexity": dev_metrics.get("dev_perplexity"),
        "world_size": ctx.world_size,
        "state_digests": digests,
        "history": history,
    }
    return model, metrics
