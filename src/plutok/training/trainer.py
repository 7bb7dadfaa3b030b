"""One training loop for every trained part (codecs, vocoders, the v1 VQ-VAE): setup, resume, step, evaluate, checkpoint.

The objective scores the model (``objective(model, batch) -> (loss, metrics)``,
:mod:`plutok.training.objectives`) and a codec's quantizer owns its upkeep
(:meth:`Quantizer.initialize`, :meth:`Quantizer.upkeep`); the trainer only schedules. Checkpoints are ``checkpoints/step-NNNNNNN.safetensors`` (model,
optimiser and upkeep tensors) plus ``.json`` (step, every rank's sampler position,
metrics, configs): no pickles. ``resume`` continues from the newest complete
checkpoint and draws the same batches an uninterrupted run would have drawn.

Under ``torchrun`` (a process group joined with :func:`plutok.distributed.init`) every
rank runs this loop on its own batches (``batch_size`` is per rank):

* gradients are averaged over ranks after every backward pass (one all-reduce of the
  flattened gradients), so every rank takes the same optimiser step;
* quantizer upkeep sees the latents and codes of *all* ranks (all-gathered) and
  then :meth:`Quantizer.synchronize` gives every rank rank 0's codebook, so the
  replicas stay equal bit for bit (:func:`state_digest` checks it);
* logged metrics and dev metrics are means over all ranks;
* only rank 0 writes checkpoints, with a barrier after; a checkpoint holds every
  rank's sampler state, so a resumed run with the same number of ranks continues
  exactly (with another number, each rank restarts its sampler from a seed of
  ``(seed, rank, step)``).

``precision`` ``auto``/``bf16``/``fp16`` runs the loss under ``torch.autocast`` on
CUDA (fp16 with a ``GradScaler``); quantizers keep their nearest-code search in
float32 themselves.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from plutok import distributed
from plutok.errors import ModelError, PlutokError
from plutok.files import atomic_path, atomic_write_text
from plutok.settings import TrainerConfig
from plutok.training.objectives import ModelLoss, Objective, tensors_under

__all__ = [
    "Trainer",
    "TrainerConfig",
    "format_duration",
    "load_optimizer_tensors",
    "optimizer_tensors",
    "seed_everything",
    "state_digest",
]


def seed_everything(seed: int) -> None:
    """Seed Python's :mod:`random`, NumPy's global generator and torch (CPU and every GPU).

    Called with the run's seed before a model is built, so its initialisation (and
    anything else drawn from a global generator) is a function of the seed alone.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


CHECKPOINT_DIR = "checkpoints"


#: ``callback(step, metrics)`` after every step (after that step's checkpoint, when one is
#: due); returning ``False`` stops training there, with a checkpoint. Tests use it as a
#: kill switch. ``metrics`` are the step's own, plus the logged/dev means when due.
Callback = Callable[[int, dict[str, float]], bool | None]


class Batches(Protocol):
    """What the trainer draws batches from (:class:`~plutok.training.data.SegmentBatcher` and the like)."""

    def sample(self, batch_size: int) -> Any:
        """The next random batch (has ``.to(device)``); a function of the seed and the state."""

    def fixed_batches(self, batch_size: int, limit: int | None = None) -> list[Any]:
        """A deterministic list of batches for evaluation."""

    def state(self) -> dict[str, Any]:
        """JSON-able position of the random stream (saved in checkpoints)."""

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state`."""

    def restart(self, seed: list[int]) -> None:
        """Continue from a fresh stream of ``seed`` (resuming with another number of ranks)."""


def format_duration(seconds: float) -> str:
    """``45s``, ``12m05s`` or ``3h07m``: a time left, as a person reads it."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the forward pass for a precision setting (``None``: plain float32)."""
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "fp16" and device.type != "cuda":
        raise PlutokError("precision fp16 needs a CUDA device (use bf16 or fp32 on CPU)")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def training_device(name: str) -> torch.device:
    """The device of this rank: ``cuda`` means GPU ``LOCAL_RANK`` under torchrun."""
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise PlutokError(f"unknown device {name!r} ({error})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PlutokError(f"device {name!r} asked for, but no CUDA GPU is available")
    ctx = distributed.context()
    if device.type == "cuda" and device.index is None and ctx.distributed:
        device = torch.device("cuda", ctx.local_rank)
    return device


def state_digest(model: nn.Module, extra: dict[str, torch.Tensor] | None = None) -> str:
    """SHA-256 over a model's tensors (and ``extra`` ones): equal on every rank unless they diverged."""
    digest = hashlib.sha256()
    tensors = {**model.state_dict(), **(extra or {})}
    for key in sorted(tensors):
        digest.update(key.encode())
        digest.update(tensors[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """An optimiser's state as flat tensors named ``INDEX/NAME`` (what a safetensors file holds)."""
    return {
        f"{index}/{name}": torch.as_tensor(value)
        for index, state in optimizer.state_dict()["state"].items()
        for name, value in state.items()
    }


def load_optimizer_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    """Continue an optimiser from :func:`optimizer_tensors` (same parameter groups)."""
    state = optimizer.state_dict()
    restored: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        index, name = key.split("/", 1)
        restored.setdefault(int(index), {})[name] = value
    state["state"] = restored
    optimizer.load_state_dict(state)


class Trainer:
    """Trains ``model`` on ``train`` under ``objective`` (:mod:`plutok.training.objectives`).

    Args:
        model: the part to train (its forward passes). Optional hooks: ``quantizer`` +
            ``latent(analysis)`` (k-means initialisation), ``no_weight_decay``
            (parameter-name prefixes AdamW must not decay).
        train, dev: batches; dev loss is reported over a fixed list of dev batches.
        config: the schedule.
        out_dir: where ``checkpoints/`` go; ``None`` writes nothing.
        callback: see :data:`Callback`.
        log: called with one JSON line per logged step (default: print, flushed).
        evaluate: replaces the dev-batch loss (called on every rank; must reduce over ranks).
        progress: a tqdm bar over the steps (rank 0).
        objective: ``objective(model, batch) -> (loss, metrics)``; its ``quantizer_parts``
            feed the codebook upkeep after each step. Default: the model's own ``loss(batch)``
            (a training wrapper that carries its loss, as the v1 VQ-VAE's does).
    """

    def __init__(
        self,
        model: nn.Module,
        train: Batches,
        dev: Batches | None,
        config: TrainerConfig,
        out_dir: str | Path | None,
        callback: Callback | None = None,
        log: Callable[[str], None] | None = None,
        evaluate: Callable[[], dict[str, float]] | None = None,
        progress: bool = False,
        objective: Objective | None = None,
    ) -> None:
        self.device = training_device(config.device)
        self.objective = (objective if objective is not None else ModelLoss()).to(self.device)
        self.model = model.to(self.device)
        self.train_data = train
        self.dev_batches = dev.fixed_batches(config.batch_size, limit=256) if dev is not None else []
        self.config = config
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.callback = callback
        self.context = distributed.context()
        self.log = log or (lambda line: print(line, flush=True))
        self.custom_evaluate = evaluate
        self.progress = progress and self.context.is_writer
        self.autocast_dtype = autocast_dtype(config.precision, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.autocast_dtype == torch.float16 else None
        prefixes = tuple(getattr(model, "no_weight_decay", ()))
        decay, no_decay = [], []
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                (no_decay if parameter.ndim < 2 or name.startswith(prefixes) else decay).append(parameter)
        for module in self.objective.joint_modules():
            for parameter in module.parameters():
                (no_decay if parameter.ndim < 2 else decay).append(parameter)
        self.parameters = decay + no_decay
        self.optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": config.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=config.learning_rate,
        )
        self.step_number = 0
        self.history: list[dict[str, float]] = []
        self._bar: Any = None  # the tqdm bar while run() shows one
        self._started_at = (time.time(), 0)  # (time, step) this run() began at

    # -- setup and resume -----------------------------------------------------------------
    def setup(self, resume: bool = False) -> None:
        """Resume from the newest checkpoint, or initialise the quantizer from encoder outputs.

        Under torchrun every rank starts from rank 0's initial weights.
        """
        if self.context.distributed:
            with torch.no_grad():
                modules = [self.model, *self.objective.trained_modules()]
                for tensor in (t for module in modules for t in module.state_dict().values()):
                    distributed.broadcast_(tensor)
        latest = self._latest_checkpoint() if resume else None
        if latest is not None:
            self._load(latest)
            if self.context.is_writer:
                self.log(f"resumed at step {self.step_number}")
            return
        quantizer = getattr(self.model, "quantizer", None)
        if quantizer is not None and hasattr(self.model, "latent") and self.config.init_batches:
            with torch.no_grad():
                latents = []
                for _ in range(self.config.init_batches):
                    batch = self.train_data.sample(self.config.batch_size).to(self.device)
                    latent = self.model.latent(batch.analysis)
                    keep = batch.code_mask[:, : latent.shape[-1]].reshape(-1).bool()
                    latents.append(latent.transpose(1, 2).reshape(-1, latent.shape[1])[keep])
                gathered = distributed.all_gather_cat(torch.cat(latents)).float()
                quantizer.initialize(gathered[: self.config.init_vectors or None])
                quantizer.synchronize()

    # -- one step ---------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def train_step(self) -> dict[str, float]:
        """One optimiser step (and quantizer upkeep); returns the step's metrics (this rank's)."""
        config = self.config
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = config.learning_rate_at(self.step_number)
        batch = self.train_data.sample(config.batch_size).to(self.device)
        with self._autocast():
            loss, metrics = self.objective(self.model, batch)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            distributed.average_gradients(self.parameters)
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
            distributed.average_gradients(self.parameters)
        norm = (
            torch.nn.utils.clip_grad_norm_(self.parameters, config.grad_clip)
            if config.grad_clip > 0
            else None
        )
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        result = {key: float(value.detach()) for key, value in metrics.items()}
        result.update(loss=float(loss.detach()), lr=config.learning_rate_at(self.step_number))
        if norm is not None:
            result["grad_norm"] = float(norm)
        parts = self.objective.quantizer_parts(self.model)
        if parts[0] is not None:
            quantizer, latent, codes, mask = parts
            if self.context.distributed:
                latent, codes = distributed.all_gather_cat(latent), distributed.all_gather_cat(codes)
                mask = None if mask is None else distributed.all_gather_cat(mask)
            result.update(quantizer.upkeep(latent, codes, mask))
            quantizer.synchronize()
        result.update(self.objective.after_step(self.model))
        self.step_number += 1
        return result

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean metrics over the fixed dev batches of all ranks (empty when there is no dev set)."""
        if self.custom_evaluate is not None:
            return self.custom_evaluate()
        self.model.eval()
        totals: dict[str, float] = {}
        for batch in self.dev_batches:
            with self._autocast():
                loss, metrics = self.objective(self.model, batch.to(self.device))
            for key, value in {"loss": loss, **metrics}.items():
                totals[key] = totals.get(key, 0.0) + float(value)
        return self._mean_over_ranks(totals, len(self.dev_batches), prefix="dev_")

    def _mean_over_ranks(self, totals: dict[str, float], count: int, prefix: str = "") -> dict[str, float]:
        """``totals / count`` summed over ranks (ranks may have different keys or none at all)."""
        if self.context.distributed:
            keys = sorted(set().union(*distributed.all_gather_objects(sorted(totals))))
            sums = torch.tensor([count, *(totals.get(k, 0.0) for k in keys)], dtype=torch.float64)
            sums = distributed.all_reduce_sum(sums.to(self.device)).cpu()
            count, totals = int(sums[0]), dict(zip(keys, sums[1:].tolist(), strict=True))
        if not count:
            return {}
        return {f"{prefix}{key}": value / count for key, value in totals.items()}

    def _steps(self) -> Iterator[int]:
        if not self.progress:
            while self.step_number < self.config.steps:
                yield self.step_number
            return
        from tqdm.auto import tqdm

        with tqdm(total=self.config.steps, initial=self.step_number, unit="step", desc="training") as bar:
            self._bar = bar
            while self.step_number < self.config.steps:
                yield self.step_number
                bar.update(1)
        self._bar = None

    def replica_digests(self) -> list[str]:
        """:func:`state_digest` of every rank's model and upkeep state (all equal unless they diverged)."""
        quantizer = getattr(self.model, "quantizer", None)
        extra = {} if quantizer is None else {f"upkeep.{k}": v for k, v in quantizer.upkeep_state().items()}
        extra.update({f"objective.{k}": v for k, v in self.objective.state_tensors().items()})
        return distributed.all_gather_objects(state_digest(self.model, extra))

    def run(self) -> dict[str, float]:
        """Train to ``config.steps``; returns the last logged metrics (with dev metrics when due)."""
        config = self.config
        started = time.time()
        self._started_at = (started, self.step_number)  # for the ETA of the progress lines
        running: dict[str, float] = {}
        window = 0
        last: dict[str, float] = {}
        for _ in self._steps():
            metrics = self.train_step()
            for key, value in metrics.items():
                running[key] = running.get(key, 0.0) + value
            window += 1
            step = self.step_number
            final = step == config.steps
            entry: dict[str, float] = {}
            if step % config.log_every == 0 or final:
                entry.update(self._mean_over_ranks(running, window))
                running, window = {}, 0
            if (config.eval_every and step % config.eval_every == 0) or final:
                entry.update(self.evaluate())
            if entry:
                entry["step"] = step
                entry["elapsed_s"] = time.time() - started
                self.history.append(entry)
                last = entry
                self._report(entry)
            checkpoint_due = bool(config.checkpoint_every and step % config.checkpoint_every == 0) or final
            if checkpoint_due:
                self.save_checkpoint()
            if self.callback is not None and self.callback(step, {**metrics, **entry}) is False:
                if not checkpoint_due:
                    self.save_checkpoint()
                break
        return last

    def pace(self, elapsed: float) -> dict[str, float | str]:
        """Steps per second of this run so far and the time left to ``config.steps`` (``eta``, as 1h02m)."""
        done = self.step_number - self._started_at[1]
        if done < 1 or elapsed <= 0:
            return {}
        rate = done / elapsed
        return {
            "steps_per_s": round(rate, 3),
            "eta": format_duration((self.config.steps - self.step_number) / rate),
        }

    def _report(self, entry: dict[str, float]) -> None:
        if not self.context.is_writer:
            return
        shown: dict[str, Any] = {k: round(v, 4) if isinstance(v, float) else v for k, v in entry.items()}
        line = json.dumps({**shown, **self.pace(entry["elapsed_s"])})
        if self._bar is not None:
            postfix = {
                k: f"{v:.4g}" for k, v in entry.items() if k in ("loss", "dev_loss", "perplexity", "active")
            }
            self._bar.set_postfix(postfix)
            self._bar.write(line)
        else:
            self.log(line)

    # -- checkpoints ----------------------------------------------------------------------
    def _checkpoint_dir(self) -> Path | None:
        return None if self.out_dir is None else self.out_dir / CHECKPOINT_DIR

    def _latest_checkpoint(self) -> Path | None:
        directory = self._checkpoint_dir()
        if directory is None:
            raise ValueError("resuming needs an output directory")
        complete = sorted(directory.glob("step-*.json"))
        return complete[-1].with_suffix("") if complete else None

    def save_checkpoint(self) -> None:
        """Every rank calls this: sampler states are gathered, rank 0 writes, all wait for it."""
        directory = self._checkpoint_dir()
        if directory is None:
            return
        samplers = distributed.all_gather_objects(self.train_data.state())
        if self.context.is_writer:
            self._write_checkpoint(directory, samplers)
        distributed.barrier()

    def _write_checkpoint(self, directory: Path, samplers: list[dict[str, Any]]) -> None:
        from safetensors.torch import save_file

        directory.mkdir(parents=True, exist_ok=True)
        stem = directory / f"step-{self.step_number:07d}"
        tensors = {f"model/{k}": v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        quantizer = getattr(self.model, "quantizer", None)
        if quantizer is not None:
            for key, value in quantizer.upkeep_state().items():
                tensors[f"upkeep/{key}"] = value.detach().cpu().contiguous()
        for key, value in optimizer_tensors(self.optimizer).items():
            tensors[f"optimizer/{key}"] = value.detach().cpu().contiguous()
        for key, value in self.objective.state_tensors().items():
            tensors[f"objective/{key}"] = value.detach().cpu().contiguous()
        with atomic_path(stem.with_suffix(".safetensors")) as temporary:
            save_file(tensors, str(temporary))
        meta = {
            "step": self.step_number,
            "samplers": samplers,  # one per rank
            "trainer": asdict(self.config),
            "model": self.model.config(),
            "history": self.history,
        }
        if self.objective.config():
            meta["objective"] = self.objective.config()
        if self.scaler is not None:
            meta["scaler"] = self.scaler.state_dict()  # a few numbers: JSON
        # The .json is written last: its presence marks the checkpoint complete.
        atomic_write_text(stem.with_suffix(".json"), json.dumps(meta, indent=1) + "\n")
        old = sorted(directory.glob("step-*.json"))[: -self.config.keep_checkpoints]
        for path in old:
            path.with_suffix(".safetensors").unlink(missing_ok=True)
            path.unlink()

    def _load(self, stem: Path) -> None:
        from safetensors.torch import load_file

        try:
            meta = json.loads(stem.with_suffix(".json").read_text(encoding="utf-8"))
            tensors = load_file(str(stem.with_suffix(".safetensors")))
        except (OSError, ValueError) as error:
            raise ModelError(f"cannot resume from {stem}: {error}") from error
        if meta.get("model") != self.model.config():
            raise ModelError(
                f"checkpoint {stem} is for another model: {meta.get('model')} (this run: {self.model.config()})"
            )
        if meta.get("objective", {}) != self.objective.config():
            raise ModelError(
                f"checkpoint {stem} was written with other training terms: {meta.get('objective', {})} "
                f"(this run: {self.objective.config()})"
            )
        try:
            self.model.load_state_dict(tensors_under(tensors, "model/"))
            load_optimizer_tensors(self.optimizer, tensors_under(tensors, "optimizer/"))
            self.objective.load_state_tensors(tensors_under(tensors, "objective/"))
        except (KeyError, ValueError, RuntimeError) as error:
            raise ModelError(
                f"cannot resume from {stem}: written with other training settings ({error})"
            ) from error
        upkeep = tensors_under(tensors, "upkeep/")
        if upkeep:
            self.model.quantizer.load_upkeep_state(upkeep)
        if self.scaler is not None and "scaler" in meta:
            self.scaler.load_state_dict(meta["scaler"])
        self.step_number = int(meta["step"])
        # Checkpoints of single-process runs before 0.3 stored only the draw count.
        samplers = meta.get("samplers") or [{"batches_drawn": meta["batches_drawn"]}]
        if len(samplers) == self.context.world_size:
            self.train_data.set_state(samplers[self.context.rank])
        else:
            self.train_data.restart([self.config.seed, self.context.rank, self.step_number])
        self.history = list(meta.get("history", []))
