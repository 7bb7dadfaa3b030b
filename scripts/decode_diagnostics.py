"""Diagnostics of where decoding loses quality: ``plutok eval`` with the codec's decode step changed.

    python scripts/decode_diagnostics.py unquantized MODEL MANIFEST [plutok eval options]
    python scripts/decode_diagnostics.py variance-scale=1.2 MODEL MANIFEST [plutok eval options]

``unquantized``: every utterance is decoded from the encoder's latent, normalised as the
codebook's vectors are, instead of from its codes: what the quantizer costs.
``variance-scale=A``: the decoder's speaker-normalised log-mel is scaled by ``A`` about each
band's mean over the utterance (a global-variance postfilter): whether flat spectra cost
intelligibility. Both need short utterances (one decoding chunk); the model card's
numbers came from ``--split dev --kind real --metrics stoi``.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from plutok.codec.content import ContentCodec
from plutok.evaluation import cli


def patch_unquantized() -> None:
    encode = ContentCodec.encode_tensor
    latents: dict[str, torch.Tensor] = {}

    def encode_tensor(self: ContentCodec, analysis: torch.Tensor) -> torch.Tensor:
        latent = self.latent(analysis)
        latents["last"] = F.normalize(latent, dim=1) if self.quantizer.settings.get("normalize") else latent
        return encode(self, analysis)

    def decode_tensor(
        self: ContentCodec, codes: torch.Tensor, speaker: torch.Tensor | None, sampling: object = None
    ) -> torch.Tensor:
        latent = latents.get("last")
        if latent is None or latent.shape[-1] != codes.shape[-1]:
            raise SystemExit(
                "unquantized decoding needs each utterance decoded in one chunk, right after encoding"
            )
        return self.synthesize_from_vectors(latent, speaker)

    ContentCodec.encode_tensor, ContentCodec.decode_tensor = encode_tensor, decode_tensor


def patch_variance_scale(scale: float) -> None:
    decode = ContentCodec.decode_tensor

    def decode_tensor(
        self: ContentCodec, codes: torch.Tensor, speaker: torch.Tensor | None, sampling: object = None
    ) -> torch.Tensor:
        features = decode(self, codes, speaker)
        mean = features.mean(dim=-1, keepdim=True)
        return mean + scale * (features - mean)

    ContentCodec.decode_tensor = decode_tensor


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    mode, model, manifest, *options = argv
    if mode == "unquantized":
        patch_unquantized()
    elif mode.startswith("variance-scale="):
        patch_variance_scale(float(mode.split("=", 1)[1]))
    else:
        print(f"unknown diagnostic {mode!r}\n{__doc__}", file=sys.stderr)
        return 2
    return cli.main([manifest, "--model", model, *options])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
