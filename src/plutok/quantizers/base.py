"""Quantizer contract: continuous latents ``(B, D, T)`` <-> integer codes ``(B, T)``.

Upkeep (k-means initialisation, dead-code replacement) lives inside the
quantizer: the trainer calls :meth:`Quantizer.initialize` once with encoder
outputs and :meth:`Quantizer.upkeep` after every optimiser step; quantizers that
need neither (FSQ) inherit the no-ops.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field

import torch
from torch import nn

from plutok import distributed
from plutok.parts import Part

__all__ = ["Quantizer", "QuantizerOutput", "code_statistics"]


@dataclass
class QuantizerOutput:
    """What a training forward pass of a quantizer returns.

    Attributes:
        quantized: ``(B, D, T)`` code vectors, straight-through gradient to the input.
        codes: ``(B, T)`` int64 in ``[0, codebook_size)``.
        loss: scalar to add to the training loss (codebook + commitment; 0 for FSQ).
        perplexity: scalar, ``exp(entropy)`` of the codes in the batch.
        usage: scalar, fraction of the codebook used in the batch.
        terms: the unweighted scalar terms of ``loss`` by name (``codebook``, ``commitment``
            for ``vq``; none for FSQ), for a model that weights them itself (the v1 VQ-VAE).
    """

    quantized: torch.Tensor
    codes: torch.Tensor
    loss: torch.Tensor
    perplexity: torch.Tensor
    usage: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)


def code_statistics(
    codes: torch.Tensor, codebook_size: int, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(perplexity, usage)`` of integer codes (any shape); ``mask`` selects the codes that count."""
    with torch.no_grad():
        flat = codes.reshape(-1) if mask is None else codes.reshape(-1)[mask.reshape(-1).bool()]
        histogram = torch.bincount(flat, minlength=codebook_size).float()
        probabilities = histogram / histogram.sum().clamp(min=1)
        entropy = -(probabilities * probabilities.clamp(min=1e-12).log()).sum()
        return entropy.exp(), (histogram > 0).float().mean()


class Quantizer(nn.Module, Part):
    """Maps ``(B, dim, T)`` latents to one code per frame out of ``codebook_size``."""

    @property
    @abstractmethod
    def codebook_size(self) -> int:
        """Number of codes."""

    @property
    @abstractmethod
    def dim(self) -> int:
        """Latent dimension ``D`` it quantizes."""

    @abstractmethod
    def forward(self, latent: torch.Tensor, mask: torch.Tensor | None = None) -> QuantizerOutput:
        """Quantize ``(B, D, T)`` for training; ``mask`` ``(B, T)`` marks real (not padded) frames."""

    @abstractmethod
    def quantize(self, latent: torch.Tensor) -> torch.Tensor:
        """Codes ``(B, T)`` int64 of ``(B, D, T)`` (inference; deterministic)."""

    @abstractmethod
    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        """Code vectors ``(B, D, T)`` of codes ``(B, T)``."""

    def initialize(self, latents: torch.Tensor) -> None:  # noqa: B027 - optional hook
        """Called once before training with encoder outputs ``(N, D)``."""

    def upkeep(
        self, latent: torch.Tensor, codes: torch.Tensor, mask: torch.Tensor | None = None
    ) -> dict[str, float]:
        """Called after each optimiser step with that step's latents and codes; returns metrics."""
        return {}

    def upkeep_state(self) -> dict[str, torch.Tensor]:
        """Training-only state of the upkeep (saved in checkpoints, not in the model)."""
        return {}

    def load_upkeep_state(self, state: dict[str, torch.Tensor]) -> None:  # noqa: B027 - optional hook
        """Restore :meth:`upkeep_state` (a resumed run then replaces the same dead codes)."""

    @torch.no_grad()
    def synchronize(self) -> None:
        """Give every rank rank 0's tensors and upkeep state (no-op in a single process).

        The ranks compute the same upkeep from the same gathered inputs; broadcasting
        removes what float non-determinism (CUDA atomics) could still make differ.
        """
        if not distributed.is_initialized():
            return
        tensors = list(self.state_dict().values())
        device = tensors[0].device if tensors else torch.device("cpu")
        for tensor in tensors:
            distributed.broadcast_(tensor)
        state = self.upkeep_state()
        if state:
            # Through this rank's device: NCCL broadcasts only CUDA tensors (the generator is on the CPU).
            moved = {key: distributed.broadcast_(value.to(device)) for key, value in state.items()}
            self.load_upkeep_state({key: value.to(state[key].device) for key, value in moved.items()})
