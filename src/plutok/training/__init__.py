"""Training: the v1 VQ-VAE loop (:mod:`.vqvae`), the v2 feature cache (:mod:`.cache`) and codec trainer (:mod:`.trainer`)."""

from plutok.training.vqvae import (
    CodebookTrainer,
    SegmentSampler,
    TrainConfig,
    evaluate,
    kmeans,
    train_vqvae,
)

__all__ = ["CodebookTrainer", "SegmentSampler", "TrainConfig", "evaluate", "kmeans", "train_vqvae"]
