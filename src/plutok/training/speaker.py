"""Training a learned speaker encoder with the codec decoder (``plutok train-codec --speaker``).

:class:`LearnedSpeakerObjective` wraps the codec's objective: each batch's speaker vectors
get their learned part from :class:`~plutok.speaker.learned.SpeakerNetwork` run on the rows'
whole utterances (``CodecBatch.utterance``), in the graph, so the reconstruction loss
trains the network through the decoder's conditioning. The network's parameters join the
model's optimiser (:meth:`~plutok.training.objectives.Objective.joint_modules`): same
learning-rate schedule, clipping, loss scaling and gradient averaging over ranks; its
weights are in the run's checkpoints and, when the run ends, in ``RUN/codec/`` beside the codec.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from plutok.errors import ModelError
from plutok.speaker.learned import LearnedMelSpeaker
from plutok.speaker.mel_statistics import MelStatisticsSpeaker
from plutok.training.data import whole_utterance
from plutok.training.objectives import Objective, ObjectiveWrapper, tensors_under

__all__ = ["LearnedSpeakerObjective", "cached_vector_map", "learned_vectors", "standardize_learned"]

#: Frames (30 s) of each utterance a learned speaker encoder reads in training; longer
#: utterances are rare in the corpus, and at encode time the network reads everything.
UTTERANCE_FRAMES = 3000


class LearnedSpeakerObjective(ObjectiveWrapper):
    """``base``'s loss with each row's learned speaker values computed by ``speaker.network``."""

    def __init__(self, base: Objective, speaker: LearnedMelSpeaker) -> None:
        super().__init__(base)
        self.speaker = speaker
        self.network = speaker.network.float().train()

    def with_learned(self, batch: Any) -> Any:
        """``batch`` with the learned part of its speaker vectors filled in by the network."""
        if batch.utterance is None or batch.utterance_active is None:
            raise ValueError(
                "a learned speaker encoder needs batches with whole utterances (utterance_frames)"
            )
        learned = self.network(batch.utterance, batch.utterance_active)
        statistics = batch.speaker[:, : self.speaker.statistics_dim]
        return dataclasses.replace(
            batch, speaker=torch.cat([statistics, learned.to(statistics.dtype)], dim=1)
        )

    def __call__(self, model: Any, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self.network.train(model.training)
        return self.base(model, self.with_learned(batch))

    def to(self, device: torch.device) -> LearnedSpeakerObjective:
        super().to(device)
        self.network.to(device)
        return self

    def trained_modules(self) -> list[nn.Module]:
        return [*super().trained_modules(), self.network]

    def joint_modules(self) -> list[nn.Module]:
        return [*super().joint_modules(), self.network]

    def config(self) -> dict[str, Any]:
        return {**super().config(), "speaker": self.speaker.config()}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        tensors = super().state_tensors()
        tensors.update({f"speaker_network/{k}": v for k, v in self.network.state_dict().items()})
        return tensors

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        super().load_state_tensors(tensors)
        self.network.load_state_dict(tensors_under(tensors, "speaker_network/"))


def cached_vector_map(speaker: Any, cached: Any) -> Callable[[np.ndarray], np.ndarray]:
    """Maps a feature cache's speaker vector (made by ``cached``) to ``speaker``'s, before its
    learned part (zeros there: :class:`LearnedSpeakerObjective` fills it in).

    ``speaker`` must be ``cached`` or derivable from its vectors: a ``mel-statistics`` or
    ``learned-mel`` encoder whose statistics keep no more coefficients than the cache's
    (:meth:`~plutok.speaker.mel_statistics.MelStatisticsSpeaker.narrowed`); otherwise
    :class:`ModelError`.
    """
    if speaker.config() == cached.config():
        return lambda vector: vector
    statistics = speaker.statistics if isinstance(speaker, LearnedMelSpeaker) else speaker
    if not isinstance(statistics, MelStatisticsSpeaker) or not isinstance(cached, MelStatisticsSpeaker):
        raise ModelError(
            f"speaker vectors of {speaker.config()['name']} cannot be derived from a cache of "
            f"{cached.config()['name']} vectors; cache again with --speaker"
        )
    padding = np.zeros(speaker.speaker_dim - statistics.speaker_dim, dtype=np.float32)
    statistics.narrowed(np.zeros(cached.speaker_dim, dtype=np.float32), cached)  # refuses early
    return lambda vector: np.concatenate([statistics.narrowed(vector, cached), padding])


def standardize_learned(decoder: Any, speaker: LearnedMelSpeaker) -> None:
    """Give the decoder's conditioning the learned values as they are (mean 0, std 1: they
    lie in (-1, 1)); its statistics of the other values stay as trained or set."""
    if not hasattr(decoder, "speaker_mean") or not hasattr(decoder, "speaker_std"):
        raise ModelError(
            f"the {decoder.name} decoder keeps no speaker statistics to condition a learned speaker on"
        )
    with torch.no_grad():
        decoder.speaker_mean[speaker.statistics_dim :] = 0
        decoder.speaker_std[speaker.statistics_dim :] = 1


@torch.no_grad()
def learned_vectors(speaker: LearnedMelSpeaker, utterances: Sequence[Any], frames: int) -> np.ndarray:
    """``(N, speaker_dim)`` full speaker vectors of cached utterances (statistics already
    mapped by :func:`cached_vector_map`), the network reading each one's first ``frames`` frames."""
    network = speaker.network.eval()
    rows = []
    for utterance in utterances:
        normalized, active = whole_utterance(speaker, utterance, frames)
        learned = network(
            torch.from_numpy(normalized)[None], torch.from_numpy(active.astype(np.float32))[None]
        )
        learned = learned[0].numpy()
        rows.append(np.concatenate([utterance.speaker[: speaker.statistics_dim], learned]))
    return np.stack(rows).astype(np.float32)
