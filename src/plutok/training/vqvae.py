"""Training the VQ-VAE on backbone features (the ``train-vq`` stage).

One process by default; under ``torchrun`` (a process group joined with
:func:`plutok.distributed.init` before calling :func:`train_vqvae`) every rank runs the
same loop on its own part of the data:

* the forward/backward pass goes through ``DistributedDataParallel`` (gradients are
  averaged over ranks; ``batch_size`` is per rank, the global batch is
  ``batch_size * world_size``);
* each rank crops with its own sampler seed (``seed + rank``);
* codebook maintenance sees the encoder outputs and codes of *all* ranks
  (all-gathered), uses the same random generator everywhere, and rank 0's codebook
  and EMA statistics are broadcast after every update, so the codebook is the same on
  every rank, bit for bit (the run ends by comparing a digest of every rank's state);
* only rank 0 writes checkpoints and the final model, with barriers around;
  checkpoints hold every rank's sampler state, so a resumed run continues exactly;
* on CUDA the forward pass runs under ``torch.autocast`` (bf16, or fp16 with loss
  scaling) except the quantizer, whose nearest-code search stays in float32.

Codebook training keeps every code in use:

* **k-means initialisation**: before the first step, encoder outputs of a few
  batches are clustered (k-means++ seeding, then Lloyd iterations) and the
  codebook is set to the centroids.
* **dead-code replacement**: a code not picked for ``dead_code_steps`` steps is
  moved onto a random vector from a replay buffer of recent encoder outputs.
* **two codebook update rules** (``TrainConfig.kmeans``):
  ``False`` (default) - gradient VQ-VAE: straight-through estimator, the
  codebook (and its affine transform, as in the original) learns from the
  codebook loss ``|sg(z) - e|^2``; the encoder gets ``commitment_weight * |z - sg(e)|^2``.
  ``True`` - the original's "plain k-means quantizer" read as *online k-means*:
  the codebook receives no gradients; each step it moves to the exponential
  moving average of the encoder vectors assigned to each code (EMA k-means,
  decay ``ema_decay``); the encoder still gets the commitment loss.
Both store the codebook in the same layout (``codebook.weight`` plus the
identity-initialised affine transform), so a trained model loads like an original one.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from plutok import distributed
from plutok.errors import AudioError, ModelError, PlutokError
from plutok.files import atomic_path, atomic_write_text
from plutok.quantizers.vq import kmeans
from plutok.settings import warmup_cosine
from plutok.training.state import load_state, save_state
from plutok.vqvae import VQVAE, VectorQuantizer, VQVAEConfig, encoded_length

__all__ = ["CodebookTrainer", "SegmentSampler", "TrainConfig", "kmeans", "train_vqvae"]

LATEST_NAME = "latest.json"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


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
        log_interval: steps between progress-bar/metrics updates.
        eval_interval: steps between dev-set evaluations (0: only at the end).
        checkpoint_interval: steps between checkpoints (0: only at the end).
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
    log_interval: int = 50
    eval_interval: int = 1000
    checkpoint_interval: int = 1000
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
            "log_interval",
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
        for name in ("warmup_steps", "eval_interval", "checkpoint_interval", "dead_code_steps"):
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
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training settings: {', '.join(unknown)}")
        return cls(**dict(data))

    def learning_rate_at(self, step: int) -> float:
        """Learning rate for the 0-based ``step``."""
        return warmup_cosine(step, self.steps, self.warmup_steps, self.learning_rate, self.min_lr_ratio)


# ----- codebook maintenance -----------------------------------------------------------------------


class CodebookTrainer:
    """Training-time state that keeps a :class:`VectorQuantizer`'s codes alive.

    Holds the replay buffer of recent encoder vectors, the per-code "steps since
    last used" counters and, in EMA k-means mode, the running cluster sizes and
    sums. Call :meth:`update` once per optimizer step after ``optimizer.step()``.

    Distributed training all-gathers ``encoded``/``codes`` across ranks before
    :meth:`update`, gives every rank the same ``generator`` seed, and then calls
    :meth:`synchronize` so all ranks hold rank 0's codebook exactly.
    """

    def __init__(
        self,
        quantizer: VectorQuantizer,
        *,
        ema: bool,
        vectors_per_step: int,
        generator: torch.Generator,
        ema_decay: float = 0.99,
        dead_code_steps: int = 100,
        replay_size: int = 8192,
    ) -> None:
        self.quantizer = quantizer
        self.ema = ema
        self.ema_decay = ema_decay
        self.dead_code_steps = dead_code_steps
        self.generator = generator
        self.vectors_per_step = max(1, vectors_per_step)
        device = quantizer.codebook.weight.device
        size, dim = quantizer.codebook_size, quantizer.dim
        self.unused_steps = torch.zeros(size, dtype=torch.long, device=device)
        self.replay = torch.zeros(replay_size, dim, device=device)
        self.replay_filled = 0
        self.replay_position = 0
        self.total_resets = 0
        self.ema_counts = torch.full((size,), self.vectors_per_step / size, device=device)
        self.ema_sums = quantizer.effective_codebook().detach() * self.ema_counts[:, None]
        if ema:
            quantizer.requires_grad_(False)

    @torch.no_grad()
    def initialize(self, vectors: torch.Tensor, iterations: int) -> None:
        """Set the codebook to the k-means centroids of encoder vectors ``(N, D)``."""
        centroids, sizes = kmeans(vectors, self.quantizer.codebook_size, iterations, self.generator)
        self.quantizer.set_code_vectors(centroids)
        self.ema_counts = (sizes / sizes.sum().clamp(min=1) * self.vectors_per_step).to(self.ema_counts)
        self.ema_sums = centroids.to(self.ema_sums) * self.ema_counts[:, None]
        self._push(vectors.to(self.replay))

    def _push(self, flat: torch.Tensor) -> None:
        capacity = self.replay.shape[0]
        if flat.shape[0] > capacity:
            keep = torch.randperm(flat.shape[0], generator=self.generator)[:capacity]
            flat = flat[keep.to(flat.device)]
        positions = (self.replay_position + torch.arange(flat.shape[0])) % capacity
        self.replay[positions.to(self.replay.device)] = flat
        self.replay_position = int((self.replay_position + flat.shape[0]) % capacity)
        self.replay_filled = min(capacity, self.replay_filled + flat.shape[0])

    @torch.no_grad()
    def update(self, encoded: torch.Tensor, codes: torch.Tensor) -> dict[str, float]:
        """Account for one step: EMA k-means update, replay buffer, dead-code replacement.

        Args:
            encoded: ``(B, D, T')`` encoder outputs of the step (detached).
            codes: ``(B, T')`` their codes.
        Returns:
            ``resets`` (codes replaced this step) and ``active`` (fraction of codes
            used within the last ``dead_code_steps`` steps).
        """
        quantizer = self.quantizer
        size = quantizer.codebook_size
        flat = encoded.detach().transpose(1, 2).reshape(-1, quantizer.dim).float()
        flat_codes = codes.reshape(-1)
        counts = torch.bincount(flat_codes, minlength=size).float()
        quantizer._counts += counts.to(quantizer._counts)
        if self.ema:
            sums = torch.zeros(size, quantizer.dim, device=flat.device).index_add_(0, flat_codes, flat)
            self.ema_counts.mul_(self.ema_decay).add_(counts, alpha=1 - self.ema_decay)
            self.ema_sums.mul_(self.ema_decay).add_(sums, alpha=1 - self.ema_decay)
            total = self.ema_counts.sum()
            smoothed = (self.ema_counts + 1e-5) / (total + size * 1e-5) * total
            quantizer.set_code_vectors(self.ema_sums / smoothed[:, None])
        self._push(flat)
        used = counts > 0
        self.unused_steps[used] = 0
        self.unused_steps[~used] += 1
        resets = 0
        if self.dead_code_steps > 0:
            dead = torch.nonzero(self.unused_steps >= self.dead_code_steps).flatten()
            if dead.numel() and self.replay_filled:
                pick = torch.randint(self.replay_filled, (dead.numel(),), generator=self.generator)
                vectors = self.replay[pick.to(self.replay.device)]
                quantizer.set_code_vectors(vectors, dead)
                self.ema_counts[dead] = self.vectors_per_step / size
                self.ema_sums[dead] = vectors * self.ema_counts[dead, None]
                self.unused_steps[dead] = 0
                resets = int(dead.numel())
                self.total_resets += resets
        window = self.dead_code_steps or 100
        return {"resets": float(resets), "active": float((self.unused_steps < window).float().mean())}

    @torch.no_grad()
    def synchronize(self) -> None:
        """Give every rank rank 0's code vectors and EMA statistics (no-op in a single process).

        The ranks compute the same update from the same gathered inputs; broadcasting
        removes what float non-determinism (CUDA atomics) could still make differ.
        """
        if not distributed.is_initialized():
            return
        distributed.broadcast_(self.quantizer.codebook.weight.data)
        distributed.broadcast_(self.ema_counts)
        distributed.broadcast_(self.ema_sums)

    def state_dict(self) -> dict[str, Any]:
        return {
            "unused_steps": self.unused_steps.cpu(),
            "replay": self.replay.cpu(),
            "replay_filled": self.replay_filled,
            "replay_position": self.replay_position,
            "total_resets": self.total_resets,
            "ema_counts": self.ema_counts.cpu(),
            "ema_sums": self.ema_sums.cpu(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        device = self.unused_steps.device
        self.unused_steps = state["unused_steps"].to(device)
        self.replay = state["replay"].to(device)
        self.replay_filled = int(state["replay_filled"])
        self.replay_position = int(state["replay_position"])
        self.total_resets = int(state["total_resets"])
        self.ema_counts = state["ema_counts"].to(device)
        self.ema_sums = state["ema_sums"].to(device)
        self.generator.set_state(state["generator"])


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


def reconstruction_loss(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 + L2 (mean squared) error between features of the same shape."""
    return F.l1_loss(reconstruction, target) + F.mse_loss(reconstruction, target)


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


def _is_writer() -> bool:
    return distributed.context().is_writer


def _autocast_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the forward pass (``None``: plain float32)."""
    precision = config.precision
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "fp16" and device.type != "cuda":
        raise PlutokError("precision fp16 needs a CUDA device (use bf16 or fp32 on CPU)")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _parameter_groups(model: VQVAE, config: TrainConfig) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if name.startswith("vq_layer.") or parameter.ndim < 2:
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    return [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _sample_encoder_vectors(
    model: VQVAE, sampler: SegmentSampler, config: TrainConfig, device: torch.device, wanted: int
) -> torch.Tensor:
    parts, collected = [], 0
    with torch.no_grad():
        while collected < wanted:
            batch = torch.from_numpy(sampler.batch(config.batch_size)).to(device)
            encoded = model.encode_tensor(batch)
            flat = encoded.transpose(1, 2).reshape(-1, encoded.shape[1])
            parts.append(flat)
            collected += flat.shape[0]
    return torch.cat(parts)[:wanted]


def _checkpoint_names(step: int) -> tuple[str, str]:
    """Weights file and the stem of the training state (``.state.safetensors`` + ``.state.json``)."""
    return f"step-{step:08d}.safetensors", f"step-{step:08d}.state"


def _save_checkpoint(
    directory: Path,
    step: int,
    model: VQVAE,
    optimizer: torch.optim.Optimizer,
    codebook: CodebookTrainer,
    sampler_states: Sequence[Mapping[str, Any]],
    train_config: TrainConfig,
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    from safetensors.torch import save_file

    weights_name, state_name = _checkpoint_names(step)
    tensors = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    with atomic_path(directory / weights_name) as temporary:
        save_file(tensors, str(temporary))
    state = {
        "step": step,
        "model_config": model.config.to_dict(),
        "train_config": train_config.to_dict(),
        "optimizer": optimizer.state_dict(),
        "codebook": codebook.state_dict(),
        "sampler": sampler_states[0],
        "samplers": list(sampler_states),  # one per rank
    }
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    save_state(directory / state_name, state)
    # Written last: a kill before this line leaves the previous checkpoint as the latest.
    latest = {"step": step, "weights": weights_name, "state": state_name}
    atomic_write_text(directory / LATEST_NAME, json.dumps(latest, indent=2) + "\n")
    kept = sorted(directory.glob("step-*.state.json"))[: -train_config.keep_checkpoints]
    for old_state in kept:
        old_step = int(old_state.name.split("-")[1].split(".")[0])
        weights, stem = _checkpoint_names(old_step)
        for name in (weights, f"{stem}.safetensors", f"{stem}.json"):
            (directory / name).unlink(missing_ok=True)


def _checkpoint(
    directory: Path,
    step: int,
    model: VQVAE,
    optimizer: torch.optim.Optimizer,
    codebook: CodebookTrainer,
    sampler: SegmentSampler,
    train_config: TrainConfig,
    scaler: torch.amp.GradScaler | None,
) -> None:
    """Every rank calls this: the sampler states are gathered, rank 0 writes, all wait for it."""
    states = distributed.all_gather_objects(sampler.state())
    if _is_writer():
        _save_checkpoint(directory, step, model, optimizer, codebook, states, train_config, scaler)
    distributed.barrier()


def _load_checkpoint(
    directory: Path,
    model: VQVAE,
    optimizer: torch.optim.Optimizer,
    codebook: CodebookTrainer,
    sampler: SegmentSampler,
    scaler: torch.amp.GradScaler | None = None,
) -> int:
    """Restore the latest checkpoint in ``directory``; returns its step (0 when there is none).

    Each rank takes its own sampler state; a checkpoint written with another number of
    ranks restarts the samplers from a seed derived from (seed, rank, step) instead.
    """
    from safetensors.torch import load_file

    latest_file = directory / LATEST_NAME
    if not latest_file.is_file():
        return 0
    try:
        latest = json.loads(latest_file.read_text(encoding="utf-8"))
        state = load_state(directory / latest["state"])
        weights = load_file(str(directory / latest["weights"]))
    except (OSError, KeyError, ValueError, RuntimeError) as error:
        raise ModelError(f"cannot resume from {directory}: {error}") from error
    if state["model_config"] != model.config.to_dict():
        raise ModelError(
            f"checkpoint in {directory} is for VQ-VAE {state['model_config']}, not {model.config.to_dict()}"
        )
    model.load_weights(weights, source=str(directory / latest["weights"]))
    try:
        optimizer.load_state_dict(state["optimizer"])
        codebook.load_state_dict(state["codebook"])
        ctx = distributed.context()
        samplers = state.get("samplers") or [state["sampler"]]
        if len(samplers) == ctx.world_size:
            sampler.set_state(samplers[ctx.rank])
        else:
            seed = int(state["train_config"].get("seed", 0))
            sampler.rng = np.random.default_rng([seed, ctx.rank, int(state["step"])])
        if scaler is not None and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
    except (KeyError, ValueError, RuntimeError) as error:
        raise ModelError(
            f"cannot resume from {directory}: the checkpoint was written with other training settings ({error})"
        ) from error
    return int(state["step"])


def _state_digest(model: VQVAE, codebook: CodebookTrainer) -> str:
    """SHA-256 over the model weights and codebook-maintenance state (equal on every rank)."""
    import hashlib

    digest = hashlib.sha256()
    tensors = dict(model.state_dict())
    for key in ("unused_steps", "replay", "ema_counts", "ema_sums"):
        tensors[f"codebook_trainer.{key}"] = getattr(codebook, key)
    for key in sorted(tensors):
        digest.update(key.encode())
        digest.update(tensors[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def train_vqvae(
    train_features: Sequence[np.ndarray],
    dev_features: Sequence[np.ndarray],
    model_config: VQVAEConfig,
    train_config: TrainConfig,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    callback: Callable[[int, dict[str, float]], bool | None] | None = None,
) -> tuple[VQVAE, dict[str, Any]]:
    """Train a VQ-VAE on feature utterances.

    In a ``torch.distributed`` process group (see :mod:`plutok.distributed`) every rank
    calls this with its own part of the training and dev utterances; see the module
    docstring for what is shared.

    Args:
        train_features: utterances, each float ``(feature_dim, frames)`` (float16 is kept as is).
        dev_features: held-out utterances (may be empty) for the dev loss.
        model_config: architecture; ``feature_dim`` must match the features.
        train_config: see :class:`TrainConfig`.
        checkpoint_dir: where step checkpoints (``step-N.safetensors`` + ``step-N.state.safetensors``/``.json``,
            ``latest.json``) and the final model (``vqvae.safetensors`` + ``vqvae.json``)
            go (written by rank 0 only); ``None`` writes nothing.
        resume: continue from the latest checkpoint in ``checkpoint_dir`` (fresh start if none).
        progress: show a tqdm bar with loss, perplexity and code usage (rank 0 only).
        callback: ``callback(step, metrics)`` after every step (after its checkpoint, if one
            was due); ``False`` stops training there, without the final evaluation and
            model (every rank must return the same). Tests use it to kill a run.
    Returns:
        The trained model (eval mode, on the training device) and metrics: ``step``,
        ``train_loss``, ``train_reconstruction_loss``, ``perplexity``, ``usage`` (means over
        the last logging window and all ranks), ``active_codes``, ``dead_code_resets``, ``dev_loss``,
        ``dev_usage``, ``dev_perplexity`` (``None`` without dev data), ``world_size``,
        ``state_digests`` (one per rank; all equal unless the ranks diverged) and
        ``history`` (one dict per log/eval point).
    """
    from tqdm.auto import tqdm

    config = train_config
    ctx = distributed.context()
    try:
        device = torch.device(config.device)
    except RuntimeError as error:
        raise PlutokError(f"unknown device {config.device!r} ({error})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PlutokError(f"device {config.device!r} asked for, but no CUDA GPU is available")
    if device.type == "cuda" and device.index is None and ctx.distributed:
        device = torch.device("cuda", ctx.local_rank)
    train = _check_features(train_features, model_config.feature_dim, "training")
    dev = _check_features(dev_features, model_config.feature_dim, "dev")
    if not train:
        raise AudioError("no training utterances")
    directory = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if resume and directory is None:
        raise ValueError("resume=True needs a checkpoint_dir")
    autocast_dtype = _autocast_dtype(config, device)
    scaler = torch.amp.GradScaler(device.type) if autocast_dtype == torch.float16 else None
    # Whether any rank has dev data decides the (collective) evaluations.
    has_dev = bool(distributed.all_reduce_sum(torch.tensor([len(dev)], device=device)).item())

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = VQVAE(model_config)
    model.to(device)
    sampler = SegmentSampler(train, config.segment_frames, seed=config.seed + ctx.rank)
    generator = torch.Generator().manual_seed(config.seed + 1)  # the same on every rank
    code_frames = encoded_length(config.segment_frames, model_config.downsample)
    codebook = CodebookTrainer(
        model.vq_layer,
        ema=config.kmeans,
        vectors_per_step=config.batch_size * code_frames * ctx.world_size,
        generator=generator,
        ema_decay=config.ema_decay,
        dead_code_steps=config.dead_code_steps,
        replay_size=config.replay_size,
    )
    optimizer = torch.optim.AdamW(_parameter_groups(model, config), lr=config.learning_rate)
    trainable = [p for group in optimizer.param_groups for p in group["params"]]

    start_step = 0
    if resume and directory is not None:
        start_step = _load_checkpoint(directory, model, optimizer, codebook, sampler, scaler)
    if start_step == 0 and config.kmeans_init:
        wanted = -(-config.kmeans_init_vectors // ctx.world_size)
        vectors = _sample_encoder_vectors(model, sampler, config, device, wanted)
        codebook.initialize(distributed.all_gather_cat(vectors), config.kmeans_iterations)
        codebook.synchronize()

    step_model: nn.Module = model
    if ctx.distributed:
        import inspect

        from torch.nn.parallel import DistributedDataParallel

        # Buffers (code-use counts) are kept equal by the gathered updates: no per-step broadcast.
        no_buffer_sync = (
            {"forward_sync_buffers": False}
            if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
            else {"broadcast_buffers": False}
        )
        step_model = DistributedDataParallel(
            step_model, device_ids=[device.index] if device.type == "cuda" else None, **no_buffer_sync
        )
    model.train()
    history: list[dict[str, Any]] = []
    window: dict[str, float] = {}
    window_steps = 0
    last: dict[str, Any] = {}
    dev_metrics: dict[str, float] = {}
    saved_step = start_step if start_step > 0 else -1
    stopped_at: int | None = None
    writer = ctx.is_writer
    bar = tqdm(
        total=config.steps,
        initial=start_step,
        disable=not (progress and writer),
        desc="train-vq" if not ctx.distributed else f"train-vq ({ctx.world_size} ranks)",
        unit="step",
    )
    for step in range(start_step, config.steps):
        for group in optimizer.param_groups:
            group["lr"] = config.learning_rate_at(step)
        batch = torch.from_numpy(sampler.batch(config.batch_size)).to(device)
        output = step_model(batch, autocast_dtype)
        reconstruction = reconstruction_loss(output.reconstruction, batch)
        loss = reconstruction + config.commitment_weight * output.commitment_loss
        if not config.kmeans:
            loss = loss + output.codebook_loss
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if config.grad_clip > 0:
            nn.utils.clip_grad_norm_(trainable, config.grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        codebook_stats = codebook.update(
            distributed.all_gather_cat(output.encoded.detach()), distributed.all_gather_cat(output.codes)
        )
        codebook.synchronize()

        values = {
            "loss": float(loss.detach()),
            "reconstruction": float(reconstruction.detach()),
            "perplexity": float(output.perplexity),
            "usage": float(output.usage),
        }
        for key, value in values.items():
            window[key] = window.get(key, 0.0) + value
        window_steps += 1
        done = step + 1
        if done % config.log_interval == 0 or done == config.steps:
            keys = sorted(window)
            sums = torch.tensor([window[key] for key in keys], dtype=torch.float64, device=device)
            sums = distributed.all_reduce_sum(sums) / ctx.world_size
            last = {key: float(value) / window_steps for key, value in zip(keys, sums.tolist(), strict=True)}
            last["active"] = codebook_stats["active"]
            history.append({"step": done, **last})
            bar.set_postfix(
                loss=f"{last['loss']:.4f}",
                ppl=f"{last['perplexity']:.1f}",
                usage=f"{last['usage']:.2f}",
                active=f"{last['active']:.2f}",
            )
            window, window_steps = {}, 0
        if has_dev and config.eval_interval and done % config.eval_interval == 0 and done != config.steps:
            dev_metrics = evaluate(model, dev, device)
            history.append({"step": done, **dev_metrics})
            if writer and progress:
                bar.write(f"step {done}: dev loss {dev_metrics.get('dev_loss', float('nan')):.4f}")
        if directory is not None and config.checkpoint_interval and done % config.checkpoint_interval == 0:
            _checkpoint(directory, done, model, optimizer, codebook, sampler, config, scaler)
            saved_step = done
        bar.update(1)
        if callback is not None and callback(done, values) is False:
            stopped_at = done
            break
    bar.close()
    if stopped_at is not None:
        if directory is not None and saved_step != stopped_at:
            _checkpoint(directory, stopped_at, model, optimizer, codebook, sampler, config, scaler)
        model.eval()
        return model, {"step": stopped_at, "stopped": True, "world_size": ctx.world_size, "history": history}
    final_step = max(start_step, config.steps)

    if has_dev:
        dev_metrics = evaluate(model, dev, device)
        history.append({"step": final_step, **dev_metrics})
    if directory is not None:
        if saved_step != final_step:
            _checkpoint(directory, final_step, model, optimizer, codebook, sampler, config, scaler)
        if writer:
            model.save(directory)
        distributed.barrier()
    digests = distributed.all_gather_objects(_state_digest(model, codebook))
    if len(set(digests)) > 1 and writer:
        import warnings

        warnings.warn(f"the ranks' models differ after training (digests {digests})", stacklevel=2)
    model.eval()
    metrics: dict[str, Any] = {
        "step": final_step,
        "train_loss": last.get("loss"),
        "train_reconstruction_loss": last.get("reconstruction"),
        "perplexity": last.get("perplexity"),
        "usage": last.get("usage"),
        "active_codes": last.get("active"),
        "dead_code_resets": codebook.total_resets,
        "dev_loss": dev_metrics.get("dev_loss"),
        "dev_usage": dev_metrics.get("dev_usage"),
        "dev_perplexity": dev_metrics.get("dev_perplexity"),
        "world_size": ctx.world_size,
        "state_digests": digests,
        "history": history,
    }
    return model, metrics
