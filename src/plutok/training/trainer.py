"""One training loop for every trained part (codecs, vocoders): setup, resume, step, evaluate, checkpoint.

The model owns its loss (:meth:`Codec.loss`, ``loss(batch) -> (loss, metrics)``) and a
codec's quantizer owns its upkeep (:meth:`Quantizer.initialize`,
:meth:`Quantizer.upkeep`); the trainer only schedules. Checkpoints are ``checkpoints/step-NNNNNNN.safetensors`` (model and
optimiser tensors) plus ``.json`` (step, sampler position, metrics, config): no
pickles. ``--resume`` continues from the newest complete checkpoint and draws
the same batches an uninterrupted run would have drawn.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from plutok.files import atomic_path, atomic_write_text
from plutok.settings import TrainerConfig

__all__ = ["Trainer", "TrainerConfig"]

CHECKPOINT_DIR = "checkpoints"


#: ``callback(step, metrics)`` after every logged step; returning ``False`` stops training
#: (after the checkpoint of that step, when one is due). Tests use it as a kill switch.
Callback = Callable[[int, dict[str, float]], bool | None]


class Batches(Protocol):
    """What the trainer draws batches from (:class:`~plutok.training.data.SegmentBatcher` and the like)."""

    batches_drawn: int

    def sample(self, batch_size: int) -> Any:
        """The next random batch (has ``.to(device)``); a function of the seed and ``batches_drawn``."""

    def fixed_batches(self, batch_size: int, limit: int | None = None) -> list[Any]:
        """A deterministic list of batches for evaluation."""


class Trainer:
    """Trains ``model`` (a codec, or any module with ``loss(batch)`` and ``config()``) on ``train``.

    Loss on ``dev`` is reported over a fixed list of its batches.
    """

    def __init__(
        self,
        model: nn.Module,
        train: Batches,
        dev: Batches | None,
        config: TrainerConfig,
        out_dir: str | Path,
        callback: Callback | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.model = model.to(config.device)
        self.train_data = train
        self.dev_batches = dev.fixed_batches(config.batch_size, limit=256) if dev is not None else []
        self.config = config
        self.out_dir = Path(out_dir)
        self.callback = callback
        # Flushed: a log redirected to a file must show progress while training runs.
        self.log = log or (lambda line: print(line, flush=True))
        params = [p for p in model.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        self.optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": config.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=config.learning_rate,
        )
        self.step_number = 0
        self.history: list[dict[str, float]] = []

    # -- setup and resume -----------------------------------------------------------------
    def setup(self, resume: bool = False) -> None:
        """Resume from the newest checkpoint, or initialise the quantizer from encoder outputs."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if resume and self._latest_checkpoint() is not None:
            self._load(self._latest_checkpoint())
            self.log(f"resumed at step {self.step_number}")
            return
        quantizer = getattr(self.model, "quantizer", None)
        if quantizer is not None and hasattr(self.model, "latent"):
            with torch.no_grad():
                latents = []
                for _ in range(self.config.init_batches):
                    batch = self.train_data.sample(self.config.batch_size).to(self.config.device)
                    latent = self.model.latent(batch.analysis)
                    keep = batch.code_mask[:, : latent.shape[-1]].reshape(-1).bool()
                    latents.append(latent.transpose(1, 2).reshape(-1, latent.shape[1])[keep])
                quantizer.initialize(torch.cat(latents))

    # -- one step ---------------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        config = self.config
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = config.learning_rate_at(self.step_number)
        batch = self.train_data.sample(config.batch_size).to(config.device)
        loss, metrics = self.model.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
        self.optimizer.step()
        result = {key: float(value.detach()) for key, value in metrics.items()}
        result.update(
            loss=float(loss.detach()), grad_norm=float(norm), lr=config.learning_rate_at(self.step_number)
        )
        upkeep = getattr(self.model, "quantizer_parts", None)
        parts = upkeep() if upkeep is not None else (None,)
        if parts[0] is not None:
            result.update(parts[0].upkeep(*parts[1:]))
        self.step_number += 1
        return result

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean metrics over the fixed dev batches (empty when there is no dev set)."""
        if not self.dev_batches:
            return {}
        self.model.eval()
        totals: dict[str, float] = {}
        for batch in self.dev_batches:
            loss, metrics = self.model.loss(batch.to(self.config.device))
            for key, value in {"loss": loss, **metrics}.items():
                totals[key] = totals.get(key, 0.0) + float(value)
        return {f"dev_{key}": value / len(self.dev_batches) for key, value in totals.items()}

    def run(self) -> dict[str, float]:
        """Train to ``config.steps``; returns the last dev metrics (or train metrics without a dev set)."""
        config = self.config
        started = time.time()
        running: dict[str, float] = {}
        last: dict[str, float] = {}
        while self.step_number < config.steps:
            metrics = self.train_step()
            for key, value in metrics.items():
                running[key] = running.get(key, 0.0) + value
            step = self.step_number
            stop = False
            if step % config.log_every == 0 or step == config.steps:
                count = config.log_every if step % config.log_every == 0 else step % config.log_every
                averaged = {key: value / count for key, value in running.items()}
                running = {}
                if step % config.eval_every == 0 or step == config.steps:
                    averaged.update(self.evaluate())
                averaged["step"] = step
                averaged["elapsed_s"] = time.time() - started
                self.history.append(averaged)
                last = averaged
                self.log(
                    json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in averaged.items()})
                )
                if self.callback is not None and self.callback(step, averaged) is False:
                    stop = True
            if step % config.checkpoint_every == 0 or step == config.steps or stop:
                self._save()
            if stop:
                break
        return last

    # -- checkpoints ----------------------------------------------------------------------
    def _checkpoint_dir(self) -> Path:
        return self.out_dir / CHECKPOINT_DIR

    def _latest_checkpoint(self) -> Path | None:
        complete = sorted(self._checkpoint_dir().glob("step-*.json"))
        return complete[-1].with_suffix("") if complete else None

    def _save(self) -> None:
        from safetensors.torch import save_file

        directory = self._checkpoint_dir()
        directory.mkdir(parents=True, exist_ok=True)
        stem = directory / f"step-{self.step_number:07d}"
        tensors = {f"model/{k}": v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        quantizer = getattr(self.model, "quantizer", None)
        if quantizer is not None:
            for key, value in quantizer.upkeep_state().items():
                tensors[f"upkeep/{key}"] = value.detach().cpu().contiguous()
        optimizer_state = self.optimizer.state_dict()
        for index, state in optimizer_state["state"].items():
            for name, value in state.items():
                tensors[f"optimizer/{index}/{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
        with atomic_path(stem.with_suffix(".safetensors")) as temporary:
            save_file(tensors, str(temporary))
        meta = {
            "step": self.step_number,
            "batches_drawn": self.train_data.batches_drawn,
            "trainer": asdict(self.config),
            "model": self.model.config(),
            "history": self.history,
        }
        # The .json is written last: its presence marks the checkpoint complete.
        atomic_write_text(stem.with_suffix(".json"), json.dumps(meta, indent=1) + "\n")
        old = sorted(directory.glob("step-*.json"))[: -self.config.keep_checkpoints]
        for path in old:
            path.with_suffix(".safetensors").unlink(missing_ok=True)
            path.unlink()

    def _load(self, stem: Path) -> None:
        from safetensors.torch import load_file

        tensors = load_file(str(stem.with_suffix(".safetensors")))
        meta = json.loads(stem.with_suffix(".json").read_text(encoding="utf-8"))
        self.model.load_state_dict(
            {k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")}
        )
        state = self.optimizer.state_dict()
        restored: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer/"):
                _, index, name = key.split("/", 2)
                restored.setdefault(int(index), {})[name] = value
        state["state"] = restored
        self.optimizer.load_state_dict(state)
        upkeep = {k[len("upkeep/") :]: v for k, v in tensors.items() if k.startswith("upkeep/")}
        if upkeep:
            self.model.quantizer.load_upkeep_state(upkeep)
        self.step_number = int(meta["step"])
        self.train_data.batches_drawn = int(meta["batches_drawn"])
        self.history = list(meta.get("history", []))
