"""The v1 model and the original (OpenVoice) release, kept so that their files load, encode,
decode and train as before.

* :mod:`.backbones`: the v1 analysis/synthesis pairs (``mel``, ``openvoice``) and
  :mod:`.backbones.adapters`, which splits one into the frontend, speaker encoder and
  vocoder of every model;
* :mod:`.vqvae`: the v1 VQ-VAE (its quantizer is :mod:`plutok.quantizers.vq`'s, with the
  original codebook layout); :mod:`.codec`: the VQ-VAE behind the codec contract
  (registered as ``vqvae``);
* :mod:`.parts`: the :class:`~plutok.model_directory.ModelParts` of a format-v1 model directory or of
  the original release's files;
* :mod:`.features` (``plutok extract``) and :mod:`.training` (``plutok train-vq``): the v1
  training stages, on the shared trainer.

Nothing outside this package imports it at module level: v1 models load it on demand.
"""
