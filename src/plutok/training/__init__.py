"""Training: the v2 feature cache (:mod:`.cache`), the shared trainer (:mod:`.trainer`), the codec
(:mod:`.codec`) and vocoder (:mod:`.vocoder`) stages, and assembly (:mod:`.assemble`). The v1
VQ-VAE's stage is :mod:`plutok.legacy.training`."""
