"""Systems under evaluation: the Plutok model and the reference baselines, behind one interface.

A :class:`System` takes a mono float32 waveform at 16 kHz and returns a
:class:`SystemOutput`: the decoded waveform (16 kHz) plus what it cost in bits.

Baselines:

==================  ==========================================================  ==============
name                what                                                        bits/s counted
==================  ==========================================================  ==============
codec2-3200/1200    Codec 2 (``c2enc``/``c2dec``), 8 kHz s16 raw                nominal mode rate
codec2-700C/450     Codec 2 low-rate modes                                      700 / 450
opus-6k             Opus (``opusenc --bitrate 6 --speech``/``opusdec``) at 16k  6000 (nominal)
speex-nb            Speex narrowband quality 2 (``speexenc -n``), 8 kHz         5950 (mode rate)
copy-synthesis      mel backbone analysis -> vocoder, no quantisation           none (continuous)
identity            the reference itself                                        256000 (16-bit PCM)
==================  ==========================================================  ==============

Codec outputs keep the codec's own delay and frame padding; the evaluation aligns
them to the reference (:func:`plutok.evaluation.metrics.align`) before scoring.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from plutok.audio import resample
from plutok.errors import PlutokError
from plutok.evaluation.extras import require_tool
from plutok.evaluation.metrics import METRIC_RATE

__all__ = [
    "BASELINE_NAMES",
    "SystemOutput",
    "System",
    "Codec2Baseline",
    "OpusBaseline",
    "SpeexBaseline",
    "CopySynthesisBaseline",
    "IdentityBaseline",
    "ModelSystem",
    "make_baseline",
    "parse_baselines",
]

CODEC2_MODES = {"3200": 3200, "1200": 1200, "700C": 700, "450": 450}
BASELINE_NAMES = (
    "codec2-3200",
    "codec2-1200",
    "codec2-700C",
    "codec2-450",
    "opus-6k",
    "speex-nb",
    "copy-synthesis",
    "identity",
)


@dataclass
class SystemOutput:
    """Result of passing one utterance through a system.

    Attributes:
        audio: decoded float32 ``(samples,)`` at ``METRIC_RATE`` (16 kHz), not yet aligned.
        bits_per_second: what the system spends per second of input (None: not a bitstream).
        num_tokens / num_codes: discrete units produced (None for baselines).
        codes: int64 ``(num_codes,)`` before BPE, for the code-entropy estimate (None for baselines).
        encode_seconds / decode_seconds: wall time of each half (total in ``encode_seconds``
            for external codecs run as one pipeline).
        extra: system-specific numbers (e.g. measured file bitrate of a codec).
    """

    audio: np.ndarray
    bits_per_second: float | None
    num_tokens: int | None = None
    num_codes: int | None = None
    codes: np.ndarray | None = None
    encode_seconds: float = 0.0
    decode_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class System(ABC):
    """Something that turns 16 kHz speech into (fewer) bits and back."""

    name: str = ""
    kind: str = "baseline"  # "model" or "baseline"

    @property
    def nominal_bits_per_second(self) -> float | None:
        """The bitrate the system is configured for (None for continuous/unquantised)."""
        return None

    @abstractmethod
    def process(self, wav: np.ndarray) -> SystemOutput:
        """Encode and decode one utterance.

        Args:
            wav: float32 ``(samples,)`` at 16 kHz.
        """

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description stored in ``results.json``."""
        return {"name": self.name, "kind": self.kind, "nominal_bits_per_second": self.nominal_bits_per_second}


def _run(command: list[str]) -> None:
    try:
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600)
    except subprocess.CalledProcessError as error:
        message = (error.stderr or b"").decode(errors="replace").strip().splitlines()
        raise PlutokError(f"{command[0]} failed: {message[-1] if message else error}") from None


def _to_pcm16(wav: np.ndarray) -> np.ndarray:
    return (np.clip(wav, -1.0, 1.0) * 32767.0).round().astype("<i2")


class Codec2Baseline(System):
    """Codec 2 at ``mode`` (3200, 1200, 700C, 450) through ``c2enc``/``c2dec`` on 8 kHz s16 raw."""

    def __init__(self, mode: str) -> None:
        if mode not in CODEC2_MODES:
            raise PlutokError(f"unknown codec2 mode {mode!r}; known: {', '.join(CODEC2_MODES)}")
        self.mode = mode
        self.name = f"codec2-{mode}"

    @property
    def nominal_bits_per_second(self) -> float:
        return float(CODEC2_MODES[self.mode])

    def process(self, wav: np.ndarray) -> SystemOutput:
        encoder, decoder = require_tool("c2enc", "codec2"), require_tool("c2dec", "codec2")
        narrow = resample(np.asarray(wav, np.float32), METRIC_RATE, 8000)
        with tempfile.TemporaryDirectory(prefix="plutok-c2-") as tmp:
            raw_in, bits, raw_out = Path(tmp, "in.raw"), Path(tmp, "out.bit"), Path(tmp, "out.raw")
            raw_in.write_bytes(_to_pcm16(narrow).tobytes())
            start = time.perf_counter()
            _run([encoder, self.mode, str(raw_in), str(bits)])
            middle = time.perf_counter()
            _run([decoder, self.mode, str(bits), str(raw_out)])
            end = time.perf_counter()
            payload_bits = bits.stat().st_size * 8
            decoded = np.frombuffer(raw_out.read_bytes(), dtype="<i2").astype(np.float32) / 32768.0
        duration = len(wav) / METRIC_RATE
        return SystemOutput(
            audio=resample(decoded, 8000, METRIC_RATE),
            bits_per_second=self.nominal_bits_per_second,
            encode_seconds=middle - start,
            decode_seconds=end - middle,
            extra={"file_bits_per_second": payload_bits / duration},
        )


class OpusBaseline(System):
    """Opus at ``kbps`` kbit/s (VBR, speech tuning) on 16 kHz input via ``opusenc``/``opusdec``."""

    def __init__(self, kbps: float = 6.0) -> None:
        self.kbps = kbps
        self.name = f"opus-{kbps:g}k"

    @property
    def nominal_bits_per_second(self) -> float:
        return self.kbps * 1000.0

    def process(self, wav: np.ndarray) -> SystemOutput:
        encoder, decoder = require_tool("opusenc", "opus-tools"), require_tool("opusdec", "opus-tools")
        with tempfile.TemporaryDirectory(prefix="plutok-opus-") as tmp:
            wav_in, bits, wav_out = Path(tmp, "in.wav"), Path(tmp, "out.opus"), Path(tmp, "out.wav")
            sf.write(str(wav_in), _to_pcm16(wav), METRIC_RATE, subtype="PCM_16")
            start = time.perf_counter()
            _run([encoder, "--quiet", "--speech", "--bitrate", f"{self.kbps:g}", str(wav_in), str(bits)])
            middle = time.perf_counter()
            _run([decoder, "--quiet", "--rate", str(METRIC_RATE), str(bits), str(wav_out)])
            end = time.perf_counter()
            file_bits = bits.stat().st_size * 8
            decoded, rate = sf.read(str(wav_out), dtype="float32", always_2d=True)
        return SystemOutput(
            audio=resample(decoded.mean(axis=1), int(rate), METRIC_RATE),
            bits_per_second=self.nominal_bits_per_second,
            encode_seconds=middle - start,
            decode_seconds=end - middle,
            extra={"file_bits_per_second": file_bits / (len(wav) / METRIC_RATE)},
        )


SPEEX_NB_BITRATES = {0: 2150, 1: 3950, 2: 5950, 3: 8000, 4: 8000, 5: 11000, 6: 11000, 7: 15000, 8: 15000}


class SpeexBaseline(System):
    """Speex narrowband (8 kHz) at ``quality`` (2 = 5.95 kbit/s) via ``speexenc -n``/``speexdec``."""

    def __init__(self, quality: int = 2) -> None:
        if quality not in SPEEX_NB_BITRATES:
            raise PlutokError(f"speex narrowband quality must be 0..8, got {quality}")
        self.quality = quality
        self.name = "speex-nb" if quality == 2 else f"speex-nb-q{quality}"

    @property
    def nominal_bits_per_second(self) -> float:
        return float(SPEEX_NB_BITRATES[self.quality])

    def process(self, wav: np.ndarray) -> SystemOutput:
        encoder, decoder = require_tool("speexenc", "speex"), require_tool("speexdec", "speex")
        narrow = resample(np.asarray(wav, np.float32), METRIC_RATE, 8000)
        with tempfile.TemporaryDirectory(prefix="plutok-speex-") as tmp:
            wav_in, bits, wav_out = Path(tmp, "in.wav"), Path(tmp, "out.spx"), Path(tmp, "out.wav")
            sf.write(str(wav_in), _to_pcm16(narrow), 8000, subtype="PCM_16")
            start = time.perf_counter()
            _run([encoder, "-n", "--quality", str(self.quality), str(wav_in), str(bits)])
            middle = time.perf_counter()
            _run([decoder, str(bits), str(wav_out)])
            end = time.perf_counter()
            file_bits = bits.stat().st_size * 8
            decoded, rate = sf.read(str(wav_out), dtype="float32", always_2d=True)
        return SystemOutput(
            audio=resample(decoded.mean(axis=1), int(rate), METRIC_RATE),
            bits_per_second=self.nominal_bits_per_second,
            encode_seconds=middle - start,
            decode_seconds=end - middle,
            extra={"file_bits_per_second": file_bits / (len(wav) / METRIC_RATE)},
        )


class CopySynthesisBaseline(System):
    """The model's vocoder on the synthesis features of the original audio: the ceiling of any codec on it.

    With a model (``tokenizer``), its own speaker encoder and vocoder settings are used
    (the log-mel its vocoder reads); a v1 OpenVoice model runs its backbone's analysis
    and synthesis. Without one, the bundled default model's.
    """

    name = "copy-synthesis"

    def __init__(self, tokenizer: Any = None) -> None:
        self._tokenizer = tokenizer

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from plutok.api import Plutok

            self._tokenizer = Plutok.from_pretrained()
        return self._tokenizer

    def process(self, wav: np.ndarray) -> SystemOutput:
        tok = self.tokenizer
        rate = int(tok.sample_rate)
        signal = resample(np.asarray(wav, np.float32), METRIC_RATE, rate)
        start = time.perf_counter()
        backbone = tok.parts.legacy_backbone
        if backbone is not None and not hasattr(tok.speaker_encoder, "log_mel"):
            speaker = backbone.speaker_embedding(signal)
            features = backbone.features(signal, speaker)
            middle = time.perf_counter()
            out = backbone.synthesize(features, speaker)
        else:
            log_mel = tok.speaker_encoder.log_mel(signal)
            middle = time.perf_counter()
            out = tok.vocoder.synthesize(log_mel)
        end = time.perf_counter()
        return SystemOutput(
            audio=resample(np.asarray(out, np.float32), rate, METRIC_RATE),
            bits_per_second=None,
            encode_seconds=middle - start,
            decode_seconds=end - middle,
        )


class IdentityBaseline(System):
    """The reference passed through unchanged (16-bit PCM at 16 kHz = 256 kbit/s): sanity check of the metrics."""

    name = "identity"

    @property
    def nominal_bits_per_second(self) -> float:
        return 16.0 * METRIC_RATE

    def process(self, wav: np.ndarray) -> SystemOutput:
        return SystemOutput(
            audio=np.asarray(wav, np.float32).copy(), bits_per_second=self.nominal_bits_per_second
        )


class ModelSystem(System):
    """A :class:`plutok.Plutok` tokenizer: encode to token ids, decode back.

    Bitrate counts every token at ``ceil(log2(vocab_size))`` bits plus the speaker vector
    (``speaker_bits``) once per utterance: ``tokens/s * ceil(log2 V) + speaker_bits / duration``.
    """

    kind = "model"

    def __init__(self, tokenizer: Any, name: str = "plutok") -> None:
        self.tokenizer = tokenizer
        self.name = name

    @property
    def bits_per_token(self) -> int:
        return int(self.tokenizer.bits_per_token)

    def describe(self) -> dict[str, Any]:
        tok = self.tokenizer
        info: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "codebook_size": int(tok.codebook_size),
            "vocab_size": int(tok.vocab_size),
            "bits_per_token": self.bits_per_token,
            "speaker_bits": int(tok.speaker_bits),
            "sample_rate": int(tok.sample_rate),
        }
        fingerprint = getattr(tok, "fingerprint", None)
        if isinstance(fingerprint, str):
            info["fingerprint"] = fingerprint
        return info

    def process(self, wav: np.ndarray) -> SystemOutput:
        tok = self.tokenizer
        start = time.perf_counter()
        encoding = tok.encode(np.asarray(wav, np.float32), METRIC_RATE)
        middle = time.perf_counter()
        out, rate = tok.decode(encoding)
        end = time.perf_counter()
        ids = list(encoding.ids)
        codes = np.asarray(tok.ids_to_codes(ids), dtype=np.int64)
        duration = len(wav) / METRIC_RATE
        return SystemOutput(
            audio=resample(np.asarray(out, np.float32), int(rate), METRIC_RATE),
            bits_per_second=tok.bitrate(len(ids) / duration, duration),
            num_tokens=len(ids),
            num_codes=int(codes.size),
            codes=codes,
            encode_seconds=middle - start,
            decode_seconds=end - middle,
        )


def make_baseline(name: str, tokenizer: Any = None) -> System:
    """Baseline by name (see :data:`BASELINE_NAMES`; also ``opus-<kbps>k``); ``tokenizer``: for copy-synthesis."""
    if name.startswith("codec2-"):
        return Codec2Baseline(name.removeprefix("codec2-").upper() if name.endswith(("c", "C")) else name[7:])
    if name.startswith("opus-") and name.endswith("k"):
        try:
            return OpusBaseline(float(name[5:-1]))
        except ValueError:
            pass
    if name == "speex-nb":
        return SpeexBaseline(2)
    if name == "copy-synthesis":
        return CopySynthesisBaseline(tokenizer)
    if name == "identity":
        return IdentityBaseline()
    raise PlutokError(f"unknown baseline {name!r}; known: {', '.join(BASELINE_NAMES)} (or 'all')")


def parse_baselines(spec: str | None, tokenizer: Any = None) -> list[System]:
    """``"codec2-700C,opus-6k"`` or ``"all"`` -> systems; empty/None -> [].

    ``tokenizer``: the evaluated model, whose vocoder and analysis settings copy-synthesis uses.
    """
    if not spec:
        return []
    names = (
        list(BASELINE_NAMES) if spec.strip() == "all" else [n.strip() for n in spec.split(",") if n.strip()]
    )
    systems: list[System] = []
    for name in dict.fromkeys(names):
        systems.append(make_baseline(name, tokenizer))
    return systems
