"""Training: the v2 feature cache (:mod:`.cache`), codec trainer (:mod:`.trainer`, :mod:`.codec`) and
the v1 VQ-VAE loop (:mod:`.vqvae`)."""

from __future__ import annotations

from typing import Any

__all__ = ["SegmentSampler", "TrainConfig", "evaluate", "kmeans", "train_vqvae"]


def __getattr__(name: str) -> Any:
    # Lazy: the CLI imports plutok.training.cli at start, which must not load torch.
    if name in __all__:
        from plutok.training import vqvae

        return getattr(vqvae, name)
    raise AttributeError(name)
