"""Code search: codes chosen by what the model's own decoder makes of them (analysis by synthesis).

The plain encoder quantizes its latent to the nearest code vector, one frame at a time,
without looking at what the decoder will render. The encoder has the audio, though, and
the model holds the decoder, so it can check: :func:`search_codes` starts from the
nearest codes, then tries, frame by frame, the codes nearest a latent fitted to the
utterance and keeps whichever brings the decoding (speaker-normalised log-mel, post-filter
included) nearer the utterance's own, in L1 -- the codec's training loss. The codes stay
codes of the same codebook, so any decoder of the model's token space reads them; only the
encoder side (and its speed) changes. It is the analysis-by-synthesis loop of classic
speech coders (CELP's codebook search), here over a neural decoder.

Three stages, all deterministic (no random numbers):

1. *Fit.* ``fit_steps`` Adam steps move the encoder's latent, kept on the unit sphere
   where the codebook lives, to lower the decoder's L1 error; the ``candidates`` codes
   nearest the fitted latent are each frame's candidates.
2. *Sweeps.* Starting from the plain codes or the nearest codes of the fitted latent
   (whichever decodes nearer), each sweep visits every frame and keeps the candidate
   that lowers the error most, if any. A code changes the decoder's output only within
   ``decoder_context`` codes, so frames more than twice that apart are decided in one
   batched decoding, exactly as if one at a time.
3. *Speaker.* :func:`fit_speaker`: ``speaker_steps`` Adam steps move the speaker vector
   (what the decoder is conditioned on and de-normalises with) to lower the L1 error of
   the de-normalised decoding of the searched codes against the utterance's log-mel. The
   vector a ``.plt`` file sends is free to be whichever one renders the voice best; it
   stays a vector of the same kind (voice swap, default voices and bit rate unchanged).

Only improvements are kept in the sweeps, so the searched codes never decode further from
the audio (in this L1) than the plain ones. The search reads the whole utterance: it runs
on audio encoded in one pass (one codec chunk). With ``fit_steps``, ``sweeps`` and
``speaker_steps`` 0 it is the plain encoder. It runs in float32 on copies of the encoder
and decoder (the model's own modules are left as they are). Unlike plain encoding, whose
codes are the same on every x86-64 CPU, a near-tie between two candidates can resolve
differently under other float kernels (measured in docs/default-model.md, "Code search").
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from plutok.errors import ModelError

__all__ = ["CodeSearch", "check_searchable", "fit_speaker", "search_codes"]


@dataclass(frozen=True)
class CodeSearch:
    """Settings of code search (module docstring).

    Attributes:
        candidates: codes tried at each frame (the nearest to the fitted latent).
        sweeps: passes over all frames; each keeps only changes that lower the error.
        fit_steps: Adam steps fitting the latent before the candidates are drawn (0: the
            candidates are the codes nearest the encoder's own latent).
        speaker_steps: Adam steps fitting the speaker vector to the searched codes (0: the
            speaker encoder's vector).
        learning_rate: Adam's step size of both fits (the latent has unit length; speaker
            vectors are DCT coefficients of log-mel statistics).
    """

    candidates: int = 8
    sweeps: int = 2
    fit_steps: int = 25
    speaker_steps: int = 50
    learning_rate: float = 0.01

    def __post_init__(self) -> None:
        for name, low in (("candidates", 1), ("sweeps", 0), ("fit_steps", 0), ("speaker_steps", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ModelError(f"code search: {name} must be an integer >= {low}, got {value!r}")
        if not self.learning_rate > 0:
            raise ModelError(f"code search: learning_rate must be positive, got {self.learning_rate!r}")

    @classmethod
    def parse(cls, text: str) -> CodeSearch:
        """Settings from ``"CANDIDATES[,SWEEPS[,FIT_STEPS[,SPEAKER_STEPS]]]"`` (the CLI's
        ``--search-settings``); ``""``: the defaults."""
        if not text.strip():
            return cls()
        try:
            values = [int(part) for part in text.split(",")]
        except ValueError:
            raise ModelError(
                f"code search: expected CANDIDATES[,SWEEPS[,FIT_STEPS[,SPEAKER_STEPS]]] (integers), got {text!r}"
            ) from None
        if len(values) > 4:
            raise ModelError(
                f"code search: at most four numbers (candidates, sweeps, fit steps, speaker steps), got {text!r}"
            )
        return cls(*values)


def check_searchable(codec: Any) -> None:
    """:class:`ModelError` unless ``codec`` is one the search can drive: an encoder, a codebook
    of vectors (``vq``) and a decoder of synthesis features."""
    quantizer = getattr(codec, "quantizer", None)
    needs = ("encoder", "decoder", "synthesis_frames_per_code", "decoder_context")
    if not all(hasattr(codec, name) for name in needs) or not hasattr(quantizer, "vectors"):
        raise ModelError(
            "code search needs a v2 codec with a codebook quantizer (vq) and a log-mel decoder; "
            "this model has none"
        )


class _Renderer:
    """float32 copies of the decoder (and post-filter) that score decodings against a target."""

    def __init__(self, codec: Any, target: np.ndarray, postfilter: Any) -> None:
        self.device = next(codec.parameters()).device
        # Copies: the model's own modules (shared, perhaps half precision on a GPU) are untouched.
        self.decoder = copy.deepcopy(codec.decoder).float().eval().requires_grad_(False)
        self.speaker_conditioned = codec.speaker_conditioned
        self.postfilter = postfilter
        self.per_code = codec.synthesis_frames_per_code
        self.wanted = torch.as_tensor(np.ascontiguousarray(target), dtype=torch.float32, device=self.device)[
            None
        ]

    def render(self, vectors: torch.Tensor, speaker: torch.Tensor | None) -> torch.Tensor:
        """Decoded features ``(B, C_out, frames)`` of latent vectors ``(B, D, T)``, post-filtered."""
        condition = None
        if speaker is not None and self.speaker_conditioned:
            condition = speaker.expand(vectors.shape[0], -1)
        decoded = self.decoder(vectors, condition)
        return decoded if self.postfilter is None else self.postfilter.apply_tensor(decoded)

    def frame_errors(self, decoded: torch.Tensor) -> torch.Tensor:
        """L1 error per output frame ``(B, T * per_code)`` (0 past the target's end)."""
        count = decoded.shape[-1] // self.per_code
        frames = min(decoded.shape[-1], self.wanted.shape[-1])
        errors = (decoded[..., :frames] - self.wanted[..., :frames]).abs().mean(dim=1)
        return F.pad(errors, (0, count * self.per_code - frames))


def search_codes(
    codec: Any,
    analysis: np.ndarray,
    target: np.ndarray,
    speaker: np.ndarray | None,
    search: CodeSearch,
    postfilter: Any = None,
) -> np.ndarray:
    """Codes int64 ``(T_codes,)`` of one utterance, chosen by analysis by synthesis (stages 1-2).

    Args:
        codec: a v2 codec (:func:`check_searchable`).
        analysis: the encoder's input ``(C_in, T_in)``, normalised as for plain encoding.
        target: what the decoder should write ``(C_out, frames)`` -- the utterance's log-mel
            normalised by its speaker vector, at ``synthesis_frames_per_code`` frames per code.
        speaker: the speaker vector the decoding is conditioned on ``(speaker_dim,)`` (as a
            .plt file stores it: float16 values), or None for an unconditioned decoder.
        search: the settings.
        postfilter: the model's post-filter, or None: the decoding is compared after it.
    """
    check_searchable(codec)
    renderer = _Renderer(codec, target, postfilter)
    device = renderer.device
    encoder = copy.deepcopy(codec.encoder).float().eval().requires_grad_(False)
    quantizer = codec.quantizer
    condition = (
        None if speaker is None else torch.as_tensor(speaker, dtype=torch.float32, device=device)[None]
    )
    with torch.no_grad():
        vectors = quantizer.vectors().detach().float()
        features = torch.as_tensor(np.ascontiguousarray(analysis), dtype=torch.float32, device=device)[None]
        latent = _on_sphere(quantizer, encoder(features))[0]  # (D, T)
    count = latent.shape[-1]

    def frame_errors(batch: torch.Tensor) -> torch.Tensor:
        return renderer.frame_errors(renderer.render(batch, condition))

    fitted = latent
    if search.fit_steps:
        with torch.inference_mode(False), torch.enable_grad():
            variable = latent[None].clone().requires_grad_(True)
            optimizer = torch.optim.Adam([variable], lr=search.learning_rate)
            for _ in range(search.fit_steps):
                loss = frame_errors(_on_sphere(quantizer, variable)).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        fitted = _on_sphere(quantizer, variable.detach())[0]
    with torch.no_grad():
        # The quantizer's own nearest-code search: with nothing fitted or swept, plain codes.
        starts = torch.stack([quantizer.nearest(latent.T), quantizer.nearest(fitted.T)])
        totals = frame_errors(vectors[starts].permute(0, 2, 1)).sum(dim=1)
        codes = starts[int(totals.argmin())].clone()
        tried = min(search.candidates, vectors.shape[0])
        choices = torch.cdist(fitted.T, vectors).topk(tried, largest=False).indices  # (count, tried)
        context = codec.decoder_context
        stride = 2 * context + 1
        per_code = renderer.per_code
        for _ in range(search.sweeps):
            for first in range(min(stride, count)):
                positions = torch.arange(first, count, stride, device=device)
                trials = codes.repeat(tried + 1, 1)  # row 0: the codes as they are
                trials[1:, positions] = choices[positions].T
                errors = frame_errors(vectors[trials].permute(0, 2, 1))
                per_position = errors.view(tried + 1, count, per_code).sum(dim=-1)
                # A position's share: the error of the output frames within its context.
                windowed = F.avg_pool1d(per_position[:, None], stride, 1, padding=context)[:, 0]
                best = windowed[:, positions].argmin(dim=0)
                moved = best > 0
                codes[positions[moved]] = choices[positions[moved], best[moved] - 1]
    return codes.cpu().numpy().astype(np.int64)


def fit_speaker(
    codec: Any,
    codes: np.ndarray,
    log_mel: np.ndarray,
    speaker: np.ndarray,
    speaker_encoder: Any,
    search: CodeSearch,
    postfilter: Any = None,
) -> np.ndarray:
    """The speaker vector float32 ``(speaker_dim,)`` fitted to ``codes`` (stage 3 of the module docstring).

    Args:
        codec: a v2 codec; ``codes``: its codes ``(T_codes,)`` of the utterance.
        log_mel: the utterance's log-mel ``(C_out, frames)``, not normalised.
        speaker: the speaker encoder's vector, where the fit starts.
        speaker_encoder: the model's speaker encoder (its :meth:`denormalize_tensor`).
        search: the settings (``speaker_steps``, ``learning_rate``).
        postfilter: the model's post-filter, or None.
    """
    start = np.asarray(speaker, dtype=np.float16).astype(np.float32)
    if not search.speaker_steps:
        return start
    renderer = _Renderer(codec, log_mel, postfilter)
    with torch.no_grad():
        vectors = codec.quantizer.dequantize(torch.as_tensor(codes, device=renderer.device)[None]).float()
    with torch.inference_mode(False), torch.enable_grad():
        variable = torch.as_tensor(start, device=renderer.device)[None].clone().requires_grad_(True)
        optimizer = torch.optim.Adam([variable], lr=search.learning_rate)
        for _ in range(search.speaker_steps):
            decoded = speaker_encoder.denormalize_tensor(renderer.render(vectors, variable), variable)
            loss = renderer.frame_errors(decoded).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    fitted = variable.detach()[0].cpu().numpy().astype(np.float32)
    return fitted if np.all(np.isfinite(fitted)) else start


def _on_sphere(quantizer: Any, latent: torch.Tensor) -> torch.Tensor:
    """``(B, D, T)`` latents as the codebook holds them: unit length where the quantizer normalises."""
    return F.normalize(latent, dim=1) if quantizer.config().get("normalize") else latent
