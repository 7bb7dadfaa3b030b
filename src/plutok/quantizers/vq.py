"""Vector quantization with its own upkeep: k-means initialisation and dead-code replacement.

The codebook lives in a low-dimensional space (factorised codes: ``dim`` of 8-32
keeps far more of a large codebook in use than quantizing a wide encoder output)
and, with ``normalize``, on the unit sphere (nearest code = highest cosine).
Two ways to learn it: gradients (codebook + commitment loss), or ``ema``: the
codes are exponential moving averages of the latents assigned to them (k-means
online; no codebook gradient). Either way, a code unused for
``dead_code_steps`` steps is moved onto a recent latent.

This is the one vector quantizer of the package: the v1 VQ-VAE's quantizer
(:class:`plutok.legacy.vqvae.AffineVectorQuantizer`) is this class with the original
release's codebook storage, so both models share search, losses and upkeep.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from plutok.errors import ModelError
from plutok.quantizers.base import Quantizer, QuantizerOutput, code_statistics
from plutok.settings import MAX_CODEBOOK_VALUES, MAX_WIDTH, check_size

__all__ = ["CodeReplay", "VectorQuantizer", "kmeans", "nearest_code"]


def nearest_code(
    vectors: torch.Tensor, codebook: torch.Tensor, chunk: int | None = 8192, full_distance: bool = False
) -> torch.Tensor:
    """Index ``(N,)`` of the nearest row of ``codebook`` ``(K, D)`` (Euclidean) for each of ``vectors`` ``(N, D)``.

    ``chunk``: rows searched at a time (``None``: all at once). ``full_distance``: the
    whole ``|v|^2 - 2 v.c + |c|^2`` as the original release computed it, instead of
    ``|c|^2 - 2 v.c``: the per-row constant changes float rounding, and the v1 model's
    codes must stay bit-identical to the original release's.
    """
    parts = []
    norms = codebook.pow(2).sum(1)[None]
    step = max(1, vectors.shape[0]) if chunk is None else chunk
    for start in range(0, vectors.shape[0], step):
        block = vectors[start : start + step]
        if full_distance:
            distances = block.pow(2).sum(1, keepdim=True) - 2 * block @ codebook.t() + norms
        else:
            distances = norms - 2 * block @ codebook.t()
        parts.append(distances.argmin(1))
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long, device=vectors.device)


class CodeReplay(torch.nn.Module):
    """Dead-code upkeep shared by every vector quantizer: recent latents and idle counters.

    Keeps a ring buffer of up to ``replay_size`` recent latents ``(replay_size, dim)`` and,
    per code, the optimiser steps since it was last picked. A code idle for
    ``dead_code_steps`` steps is moved onto a latent drawn from the buffer. Its tensors
    are non-persistent buffers (training-only; never part of a model's weights).
    """

    def __init__(self, codebook_size: int, dim: int, replay_size: int, generator: torch.Generator) -> None:
        super().__init__()
        self.capacity = replay_size
        self.register_buffer("unused_steps", torch.zeros(codebook_size, dtype=torch.long), persistent=False)
        # Allocated by the first push: a model that only encodes and decodes never needs it
        # (16,384 codes of the original release's width 768 would be 48 MiB for nothing).
        self.register_buffer("replay", torch.zeros(0, dim), persistent=False)
        self.filled = 0
        self.position = 0
        self.generator = generator

    def push(self, flat: torch.Tensor) -> None:
        """Add latents ``(N, dim)``; more than the buffer holds are subsampled first."""
        capacity = self.capacity
        if self.replay.shape[0] != capacity:
            self.replay = self.replay.new_zeros(capacity, self.replay.shape[1])
        if flat.shape[0] > capacity:
            flat = flat[torch.randperm(flat.shape[0], generator=self.generator)[:capacity].to(flat.device)]
        positions = (self.position + torch.arange(flat.shape[0])) % capacity
        self.replay[positions.to(self.replay.device)] = flat
        self.position = int((self.position + flat.shape[0]) % capacity)
        self.filled = min(capacity, self.filled + flat.shape[0])

    def count(self, counts: torch.Tensor) -> None:
        """Account for one step in which code ``k`` was picked ``counts[k]`` times ``(K,)``."""
        used = counts > 0
        self.unused_steps[used] = 0
        self.unused_steps[~used] += 1

    def dead(self, dead_code_steps: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Codes idle for ``dead_code_steps`` steps ``(n,)`` and their new vectors ``(n, dim)``.

        The vectors are None (and nothing is reset) while the buffer is empty.
        """
        dead = torch.nonzero(self.unused_steps >= dead_code_steps).flatten()
        if not (dead.numel() and self.filled):
            return dead, None
        pick = torch.randint(self.filled, (dead.numel(),), generator=self.generator)
        self.unused_steps[dead] = 0
        return dead, self.replay[pick.to(self.replay.device)]


@torch.no_grad()
def kmeans(
    vectors: torch.Tensor, k: int, iterations: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means++ seeding followed by ``iterations`` Lloyd steps.

    Args:
        vectors: ``(N, D)`` float.
        k: number of centroids (may exceed ``N``; centroids then repeat points).
        generator: CPU generator; the result is a function of its state.
    Returns:
        ``centroids`` ``(k, D)`` and ``cluster sizes`` ``(k,)`` of the final assignment.
    """
    vectors = vectors.float()
    count = vectors.shape[0]
    if count == 0:
        raise ValueError("k-means needs at least one vector")

    def pick(weights: torch.Tensor) -> int:
        if float(weights.sum()) <= 0:
            return int(torch.randint(count, (1,), generator=generator))
        return int(torch.multinomial(weights.cpu().double(), 1, generator=generator))

    chosen = [int(torch.randint(count, (1,), generator=generator))]
    closest = (vectors - vectors[chosen[0]]).pow(2).sum(1)
    for _ in range(1, k):
        index = pick(closest)
        chosen.append(index)
        closest = torch.minimum(closest, (vectors - vectors[index]).pow(2).sum(1))
    centroids = vectors[chosen].clone()
    sizes = torch.zeros(k, device=vectors.device)
    for _ in range(max(1, iterations)):
        assignment = nearest_code(vectors, centroids)
        sizes = torch.bincount(assignment, minlength=k).float()
        sums = torch.zeros_like(centroids).index_add_(0, assignment, vectors)
        filled = sizes > 0
        centroids[filled] = sums[filled] / sizes[filled, None]
        empty = torch.nonzero(~filled).flatten()
        if empty.numel():
            replacement = torch.randint(count, (empty.numel(),), generator=generator)
            centroids[empty] = vectors[replacement.to(vectors.device)]
    return centroids, sizes


class VectorQuantizer(Quantizer):
    """``codebook_size`` codes of dimension ``dim``; see the module docstring for the options.

    ``dead_code_steps = 0`` turns dead-code replacement off. Subclasses may store the
    codebook differently (:meth:`_make_codebook`, :meth:`vectors`, :meth:`_rows`,
    :meth:`_set_rows`) and search it differently (:attr:`search_chunk`,
    :attr:`full_distance`, see :func:`nearest_code`); everything else is shared.
    """

    name = "vq"
    #: Rows searched at a time by :func:`nearest_code` (``None``: all at once).
    search_chunk: int | None = 8192
    #: Search with the whole Euclidean distance (see :func:`nearest_code`).
    full_distance: bool = False

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        normalize: bool = True,
        ema: bool = False,
        commitment: float = 0.25,
        ema_decay: float = 0.99,
        dead_code_steps: int = 200,
        kmeans_iterations: int = 20,
        replay_size: int = 16384,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_size("VQ quantizer", "codebook_size", codebook_size, 2, MAX_CODEBOOK_VALUES)
        check_size("VQ quantizer", "dim", dim, 1, MAX_WIDTH)
        check_size("VQ quantizer", "replay_size", replay_size, 1, MAX_CODEBOOK_VALUES // dim)
        if codebook_size * dim > MAX_CODEBOOK_VALUES:
            raise ModelError(
                f"VQ quantizer: a codebook of {codebook_size} x {dim} values; at most {MAX_CODEBOOK_VALUES}"
            )
        self.settings = {
            "codebook_size": int(codebook_size),
            "dim": int(dim),
            "normalize": bool(normalize),
            "ema": bool(ema),
            "commitment": float(commitment),
            "ema_decay": float(ema_decay),
            "dead_code_steps": int(dead_code_steps),
            "kmeans_iterations": int(kmeans_iterations),
            "replay_size": int(replay_size),
            "seed": int(seed),
        }
        self._make_codebook(codebook_size, dim, trainable=not ema)
        # Upkeep state: training-only, rebuilt within a few steps after a resume.
        self._generator = torch.Generator().manual_seed(seed)
        self._dead_codes = CodeReplay(codebook_size, dim, replay_size, self._generator)
        self._total_resets = 0
        self._ema_ready = False  # see _start_averages
        self.register_buffer("_ema_counts", torch.ones(codebook_size), persistent=False)
        self.register_buffer("_ema_sums", self._rows().detach().clone(), persistent=False)

    # -- codebook storage -----------------------------------------------------------------
    def _make_codebook(self, codebook_size: int, dim: int, trainable: bool) -> None:
        """Create the codebook's parameters (``ema`` codebooks are not ``trainable``)."""
        self.codebook = torch.nn.Parameter(
            torch.randn(codebook_size, dim) / dim**0.5, requires_grad=trainable
        )

    def _rows(self) -> torch.Tensor:
        """The ``(K, D)`` rows that the upkeep averages and replaces."""
        return self.codebook

    @torch.no_grad()
    def _set_rows(self, rows: torch.Tensor, index: torch.Tensor | None = None) -> None:
        """Make :meth:`_rows` at ``index`` (all when ``None``) equal ``rows``."""
        if index is None:
            self.codebook.copy_(rows.to(self.codebook))
        else:
            self.codebook[index] = rows.to(self.codebook)

    @property
    def codebook_size(self) -> int:
        return self.settings["codebook_size"]

    @property
    def dim(self) -> int:
        return self.settings["dim"]

    def config(self) -> dict[str, Any]:
        return {"name": self.name, **self.settings}

    @classmethod
    def from_config(cls, config: dict[str, Any], directory: Path | None = None) -> VectorQuantizer:
        try:
            return cls(**{key: value for key, value in config.items() if key != "name"})
        except TypeError as error:  # unknown or missing keys
            raise ModelError(f"bad VQ quantizer config: {error}") from None

    def _prepare(self, latent: torch.Tensor) -> torch.Tensor:
        """``(B, D, T)`` -> rows ``(B * T, D)``, on the sphere when ``normalize``."""
        flat = latent.transpose(1, 2).reshape(-1, self.dim)
        return F.normalize(flat, dim=1) if self.settings["normalize"] else flat

    def vectors(self) -> torch.Tensor:
        """The code vectors actually used, ``(K, D)``."""
        return F.normalize(self.codebook, dim=1) if self.settings["normalize"] else self.codebook

    def nearest(self, rows: torch.Tensor) -> torch.Tensor:
        """Codes ``(N,)`` of latent rows ``(N, D)`` (already normalised where ``normalize``)."""
        return nearest_code(rows, self.vectors(), chunk=self.search_chunk, full_distance=self.full_distance)

    def forward(self, latent: torch.Tensor, mask: torch.Tensor | None = None) -> QuantizerOutput:
        # Nearest-code search and codebook losses in float32, also under autocast.
        with torch.autocast(latent.device.type, enabled=False):
            return self._forward(latent.float(), mask)

    def _forward(self, latent: torch.Tensor, mask: torch.Tensor | None) -> QuantizerOutput:
        batch, _, frames = latent.shape
        flat = self._prepare(latent)
        vectors = self.vectors()
        codes = nearest_code(
            flat.detach(), vectors.detach(), chunk=self.search_chunk, full_distance=self.full_distance
        )
        chosen = vectors[codes]
        weights = None if mask is None else mask.reshape(-1, 1).float()

        def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            error = (a - b).pow(2)
            return (
                error.mean()
                if weights is None
                else (error * weights).sum() / (weights.sum() * self.dim).clamp(min=1)
            )

        commitment = mse(flat, chosen.detach())
        codebook = mse(chosen, flat.detach())
        loss = self.settings["commitment"] * commitment
        if not self.settings["ema"]:
            loss = loss + codebook
        quantized = (flat + (chosen - flat).detach()).reshape(batch, frames, self.dim).transpose(1, 2)
        codes = codes.reshape(batch, frames)
        perplexity, usage = code_statistics(codes, self.codebook_size, mask)
        terms = {"codebook": codebook, "commitment": commitment}
        return QuantizerOutput(quantized, codes, loss, perplexity, usage, terms)

    @torch.no_grad()
    def quantize(self, latent: torch.Tensor) -> torch.Tensor:
        return self.nearest(self._prepare(latent)).reshape(latent.shape[0], latent.shape[2])

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        return F.embedding(codes, self.vectors()).transpose(1, 2)

    # -- upkeep ---------------------------------------------------------------------------
    def upkeep_state(self) -> dict[str, torch.Tensor]:
        return {
            "unused_steps": self._dead_codes.unused_steps,
            "replay": self._dead_codes.replay,
            "ema_counts": self._ema_counts,
            "ema_sums": self._ema_sums,
            "replay_position": torch.tensor([self._dead_codes.filled, self._dead_codes.position]),
            "generator": self._generator.get_state(),
            "total_resets": torch.tensor([self._total_resets]),
        }

    def load_upkeep_state(self, state: dict[str, torch.Tensor]) -> None:
        self._dead_codes.unused_steps.copy_(state["unused_steps"])
        # Assigned, not copied: the buffer is allocated at the first push (see CodeReplay).
        self._dead_codes.replay = state["replay"].to(self._dead_codes.replay)
        self._ema_counts.copy_(state["ema_counts"])
        self._ema_sums.copy_(state["ema_sums"])
        self._dead_codes.filled, self._dead_codes.position = (int(v) for v in state["replay_position"])
        self._generator.set_state(state["generator"].to(torch.uint8))
        self._ema_ready = True
        # Checkpoints of before the count have none.
        self._total_resets = int(state["total_resets"][0]) if "total_resets" in state else 0

    @property
    def total_resets(self) -> int:
        """Dead codes replaced since training began (resumed runs included)."""
        return self._total_resets

    @torch.no_grad()
    def initialize(self, latents: torch.Tensor) -> None:
        """k-means of encoder outputs ``(N, D)`` as the initial codebook."""
        flat = latents.float()
        if self.settings["normalize"]:
            flat = F.normalize(flat, dim=1)
        centroids, sizes = kmeans(
            flat.cpu(), self.codebook_size, self.settings["kmeans_iterations"], self._generator
        )
        self._set_rows(centroids)
        self._ema_counts.copy_(sizes.clamp(min=1).to(self._ema_counts))
        self._ema_sums.copy_(centroids.to(self._ema_sums) * self._ema_counts[:, None])
        self._dead_codes.push(flat.to(self._dead_codes.replay))
        self._ema_ready = True

    @torch.no_grad()
    def _start_averages(self) -> None:
        """Start the EMA statistics from the rows as they are at the first upkeep, unless
        :meth:`initialize` or a checkpoint set them: rows loaded or set after construction
        (a saved codebook trained on) must not be pulled back to the initial random ones."""
        if not self._ema_ready:
            self._ema_counts.fill_(1.0)
            self._ema_sums.copy_(self._rows())
            self._ema_ready = True

    @torch.no_grad()
    def upkeep(
        self, latent: torch.Tensor, codes: torch.Tensor, mask: torch.Tensor | None = None
    ) -> dict[str, float]:
        """EMA update (``ema``), replay buffer, and replacement of codes unused for ``dead_code_steps``."""
        self._start_averages()
        flat = self._prepare(latent.detach()).float()
        flat_codes = codes.reshape(-1)
        if mask is not None:
            keep = mask.reshape(-1).bool()
            flat, flat_codes = flat[keep], flat_codes[keep]
        counts = torch.bincount(flat_codes, minlength=self.codebook_size).float()
        if self.settings["ema"]:
            decay = self.settings["ema_decay"]
            sums = torch.zeros_like(self._ema_sums).index_add_(0, flat_codes, flat)
            self._ema_counts.mul_(decay).add_(counts, alpha=1 - decay)
            self._ema_sums.mul_(decay).add_(sums, alpha=1 - decay)
            self._set_rows(self._ema_sums / self._ema_counts.clamp(min=1e-5)[:, None])
        self._dead_codes.push(flat)
        self._dead_codes.count(counts)
        resets = 0
        if self.settings["dead_code_steps"] > 0:
            dead, replacement = self._dead_codes.dead(self.settings["dead_code_steps"])
            if replacement is not None:
                self._set_rows(replacement, dead)
                self._ema_counts[dead] = 1.0
                self._ema_sums[dead] = replacement
                resets = int(dead.numel())
                self._total_resets += resets
        active = (self._dead_codes.unused_steps < 100).float().mean()
        return {"resets": float(resets), "active": float(active)}
