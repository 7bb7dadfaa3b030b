"""The adversarial term of ``train-codec --adversarial-weight W``: a decoder that does not over-smooth.

A codec decoder trained on L1-type losses predicts the average of what could follow the
codes: a log-mel whose bands vary less than real speech does (3-14 % for the v2.6
decoder, docs/default-model.md). A discriminator that sees patches of log-mel, true and
decoded, and a decoder trained to make its patches pass, attack that at its cause; the
L1 terms stay, so the decoder still follows the target, and feature matching (L1 between
the discriminator's hidden activations on the two) gives it a steadier signal than the
verdict alone.

* :class:`MelPatchDiscriminator`: a 2-D convolutional net over ``(mel bins, frames)`` of the
  speaker-normalised log-mel (the decoder's output space), one least-squares verdict per
  patch (each verdict sees 33 bins by 33 frames, 330 ms).
* :class:`AdversarialObjective`: wraps the codec's objective. Its loss adds
  ``weight * mean((D(decoded) - 1)^2) + feature_matching_weight * FM``; after each optimiser
  step of the codec, :meth:`AdversarialObjective.after_step` trains the discriminator on
  that step's true and decoded log-mels (``mean((D(true) - 1)^2) + mean(D(decoded)^2)``)
  with its own AdamW. For its first ``warmup_steps`` only the discriminator learns.

The discriminator is training-only: its weights and optimiser state live in the run's
checkpoints (a resumed run continues exactly), never in a model. Frames past the end of
a clip in a padded crop are given the target's values, so they tell the discriminator
nothing. Under ``torchrun`` its gradients are averaged over ranks like the codec's.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from plutok import distributed
from plutok.settings import AdversarialSettings
from plutok.training.objectives import Objective, ObjectiveWrapper, tensors_under
from plutok.training.trainer import load_optimizer_tensors, optimizer_tensors

__all__ = ["AdversarialObjective", "AdversarialSettings", "MelPatchDiscriminator"]

#: ``(out channels as a multiple of AdversarialSettings.channels, kernel, stride)`` of the
#: hidden layers over (bins, frames); the verdict layer (3 x 3) follows. Strides of 2 on both
#: axes twice, then on the bins once: each verdict sees 33 bins x 33 frames (330 ms).
_LAYERS = ((1, (3, 5), (1, 1)), (2, (3, 5), (2, 2)), (4, (3, 5), (2, 2)), (4, (3, 3), (2, 1)))


class MelPatchDiscriminator(nn.Module):
    """Least-squares verdicts on patches of speaker-normalised log-mel ``(B, bins, frames)``."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        layers = []
        width = 1
        for multiple, kernel, stride in _LAYERS:
            padding = (kernel[0] // 2, kernel[1] // 2)
            layers.append(nn.Conv2d(width, multiple * channels, kernel, stride, padding))
            width = multiple * channels
        self.layers = nn.ModuleList(layers)
        self.verdict = nn.Conv2d(width, 1, (3, 3), padding=(1, 1))

    def forward(self, log_mel: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(verdicts (B, 1, bins', frames'), hidden activations of every layer)``."""
        hidden = log_mel.float().unsqueeze(1)
        features = []
        for layer in self.layers:
            hidden = F.leaky_relu(layer(hidden), 0.2)
            features.append(hidden)
        return self.verdict(hidden), features


def _feature_matching(decoded: list[torch.Tensor], true: list[torch.Tensor]) -> torch.Tensor:
    """Mean over layers of the L1 between activations (the true ones as constants)."""
    return sum(F.l1_loss(d, t.detach()) for d, t in zip(decoded, true, strict=True)) / len(decoded)


class AdversarialObjective(ObjectiveWrapper):
    """``base``'s loss plus the adversarial and feature-matching terms (module docstring).

    ``base`` must expose ``last_synthesis`` after each call: ``(decoded, target, frame_mask)``,
    the decoded log-mel ``(B, C, T)`` still in the graph, the target and the real frames
    ``(B, T)`` (:class:`~plutok.training.objectives.ContentCodecObjective` does).
    """

    def __init__(self, base: Objective, settings: AdversarialSettings) -> None:
        super().__init__(base)
        self.settings = settings
        self.discriminator = MelPatchDiscriminator(settings.channels)
        self.optimizer = torch.optim.AdamW(
            self.discriminator.parameters(), lr=settings.learning_rate, betas=(0.8, 0.99)
        )
        self.step_number = 0
        self._pair: tuple[torch.Tensor, torch.Tensor] | None = None

    def to(self, device: torch.device) -> AdversarialObjective:
        super().to(device)
        self.discriminator.to(device)
        return self

    def trained_modules(self) -> list[nn.Module]:
        return [*super().trained_modules(), self.discriminator]

    def __call__(self, model: Any, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total, metrics = self.base(model, batch)
        if not model.training:
            return total, metrics
        decoded, target, frame_mask = self.base.last_synthesis
        # Padding frames carry the target's values in both: nothing to tell apart there.
        decoded = torch.where(frame_mask[:, None, :].bool(), decoded, target)
        self._pair = (decoded.detach(), target.detach())
        if self.step_number < self.settings.warmup_steps:
            return total, metrics
        self.discriminator.requires_grad_(False)  # the decoder's step moves only the decoder
        verdict, decoded_features = self.discriminator(decoded)
        with torch.no_grad():
            _, true_features = self.discriminator(target)
        self.discriminator.requires_grad_(True)
        generator = torch.mean((verdict - 1) ** 2)
        matching = _feature_matching(decoded_features, true_features)
        total = total + self.settings.weight * generator + self.settings.feature_matching_weight * matching
        return total, {**metrics, "adversarial": generator, "feature_matching": matching}

    def after_step(self, model: Any) -> dict[str, float]:
        """One discriminator step on the last training call's true and decoded log-mels."""
        metrics = super().after_step(model)
        self.step_number += 1
        if self._pair is None:
            return metrics
        decoded, target = self._pair
        self._pair = None
        if not bool(torch.isfinite(decoded).all()):
            # An overflowing fp16 step (which the codec's loss scaler skips) must not
            # leave NaN in the discriminator, which would then poison every later step.
            return {**metrics, "discriminator_skipped": 1.0}
        true_verdict, _ = self.discriminator(target)
        decoded_verdict, _ = self.discriminator(decoded)
        on_true = torch.mean((true_verdict - 1) ** 2)
        on_decoded = torch.mean(decoded_verdict**2)
        self.optimizer.zero_grad(set_to_none=True)
        (on_true + on_decoded).backward()
        distributed.average_gradients(list(self.discriminator.parameters()))
        self.optimizer.step()
        return {
            **metrics,
            "discriminator_true": float(on_true.detach()),
            "discriminator_decoded": float(on_decoded.detach()),
        }

    def config(self) -> dict[str, Any]:
        return {**super().config(), "adversarial": asdict(self.settings)}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Discriminator weights, its optimiser's state and the step count: what a resumed run needs."""
        tensors = super().state_tensors()
        tensors.update({f"discriminator/{k}": v for k, v in self.discriminator.state_dict().items()})
        tensors.update({f"optimizer/{k}": v for k, v in optimizer_tensors(self.optimizer).items()})
        tensors["step"] = torch.tensor(self.step_number)
        return tensors

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`state_tensors` (``KeyError``/``RuntimeError`` when they do not fit)."""
        super().load_state_tensors(tensors)
        self.discriminator.load_state_dict(tensors_under(tensors, "discriminator/"))
        load_optimizer_tensors(self.optimizer, tensors_under(tensors, "optimizer/"))
        self.step_number = int(tensors["step"])
