"""``plutok bench``: speed and memory of encoding and decoding on this machine.

Measures, for inputs of several durations (default 10 s, 60 s, 600 s):

- encode and decode real-time factor (RTF = compute seconds / audio seconds; < 1 is faster than real time);
- batch throughput: a batch of short clips encoded and decoded one after another, reported as
  hours of audio per hour of compute (= 1 / RTF of the whole round trip);
- BPE throughput: codes per second through ``bpe.encode`` (codes -> tokens) and ``bpe.decode``;
- peak resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, the process peak so
  far, measured with tracemalloc off so it costs nothing), torch thread count, and the machine
  (CPU model, cores, torch version).

Input audio is a real recording tiled to length (``--audio``) or, by default, generated
speech-like audio (voiced harmonic source with moving pitch through moving formants, in
syllable-sized bursts with pauses): speed does not depend on what is said.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from plutok.errors import PlutokError

__all__ = [
    "speech_like",
    "machine_info",
    "BenchTarget",
    "benchmark",
    "markdown_table",
    "configure_parser",
    "run",
]


def speech_like(duration: float, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Deterministic speech-like float32 ``(samples,)``: voiced syllables through moving formants, with pauses."""
    rng = np.random.default_rng(seed)
    total = int(round(duration * sample_rate))
    # A 4 s phrase is built once (vectorised per syllable) and tiled: cheap even for 600 s.
    phrase_len = min(total, 4 * sample_rate)
    t = np.arange(phrase_len) / sample_rate
    f0 = 110 + 25 * np.sin(2 * np.pi * 0.7 * t) + 10 * np.sin(2 * np.pi * 3.1 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    harmonics = np.arange(1, 40)[:, None]
    formants = [
        (rng.uniform(300, 800), 80.0),
        (rng.uniform(900, 2200), 120.0),
        (rng.uniform(2400, 3200), 200.0),
    ]
    # Formant envelope applied in the harmonic domain: amplitude of harmonic k from its frequency.
    freq = harmonics * f0[None, :]
    syllable = 0.2 * sample_rate
    vowel_shift = np.sin(2 * np.pi * t / 0.2 * 0.5 + rng.uniform(0, np.pi))
    envelope = np.zeros_like(freq)
    for centre, width in formants:
        moving = centre * (1 + 0.25 * vowel_shift)
        envelope += 1.0 / (1.0 + ((freq - moving[None, :]) / width) ** 2)
    envelope *= freq < sample_rate / 2 - 200
    voiced = (envelope * np.sin(harmonics * phase[None, :])).sum(axis=0)
    syllables = (np.arange(phrase_len) // syllable).astype(int)
    pauses = rng.random(syllables.max() + 1) < 0.2
    shape = np.sin(np.pi * (np.arange(phrase_len) % syllable) / syllable) ** 2
    amplitude = np.where(pauses[syllables], 0.0, shape)
    noise = rng.standard_normal(phrase_len) * 0.01
    phrase = voiced * amplitude + noise
    phrase = (0.3 * phrase / (np.abs(phrase).max() + 1e-9)).astype(np.float32)
    return np.resize(phrase, total).astype(np.float32)


def machine_info() -> dict[str, Any]:
    """CPU model, logical cores, cores this process may use, torch version and threads, OS."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": bool(torch.cuda.is_available()),
    }


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


@dataclass
class BenchTarget:
    """What is benchmarked: ``encode(wav) -> state``, ``decode(state) -> wav``, optional BPE stage.

    ``codes(state)`` returns the int64 codes of an encoding (for the BPE benchmark), or None.
    """

    name: str
    sample_rate: int
    encode: Callable[[np.ndarray], Any]
    decode: Callable[[Any], Any]
    codes: Callable[[Any], np.ndarray | None] = lambda state: None
    bpe_encode: Callable[[np.ndarray], Any] | None = None
    bpe_decode: Callable[[Any], Any] | None = None
    #: ``profile(state) -> {stage: seconds}``: where one decode spends its time.
    profile: Callable[[Any], dict[str, float]] | None = None

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, name: str = "plutok") -> BenchTarget:
        rate = int(tokenizer.sample_rate)
        bpe = getattr(tokenizer, "bpe", None)
        return cls(
            name=name,
            sample_rate=rate,
            encode=lambda wav: tokenizer.encode(wav, rate),
            decode=lambda encoding: tokenizer.decode(encoding),
            codes=lambda encoding: np.asarray(tokenizer.ids_to_codes(encoding.ids), np.int64),
            bpe_encode=None if bpe is None else bpe.encode,
            bpe_decode=None if bpe is None else bpe.decode,
            profile=(lambda encoding: profile_decode(tokenizer, encoding))
            if hasattr(tokenizer, "synthesis_features")
            else None,
        )

    @classmethod
    def copy_synthesis(cls, tokenizer: Any) -> BenchTarget:
        """The model's own vocoder on the log-mel of the input (its analysis settings): no codec, no BPE."""
        log_mel = tokenizer.speaker_encoder.log_mel
        return cls(
            name=f"copy-synthesis ({tokenizer.vocoder.name})",
            sample_rate=int(tokenizer.sample_rate),
            encode=log_mel,
            decode=tokenizer.vocoder.synthesize,
        )


def profile_decode(tokenizer: Any, encoding: Any, output_rate: int = 48000) -> dict[str, float]:
    """Seconds one decode of ``encoding`` spends per stage: BPE, codec decoder, vocoder, and
    resampling the result to ``output_rate`` (what ``decode(..., sample_rate=48000)`` adds)."""
    from plutok.audio import resample

    codes, bpe_s = _timed(lambda: tokenizer.ids_to_codes(encoding.ids))
    speaker = tokenizer.speaker_vector(encoding.speaker)
    features, codec_s = _timed(lambda: tokenizer.synthesis_features(codes, speaker))
    chunk = (
        None
        if tokenizer.chunk_codes is None
        else tokenizer.chunk_codes * tokenizer.codec.synthesis_frames_per_code
    )
    wav, vocoder_s = _timed(lambda: tokenizer.vocoder.synthesize(features, speaker, chunk_frames=chunk))
    _, resample_s = _timed(lambda: resample(wav, tokenizer.sample_rate, output_rate))
    return {
        "bpe_s": bpe_s,
        "codec_decoder_s": codec_s,
        "vocoder_s": vocoder_s,
        f"resample_to_{output_rate}_s": resample_s,
    }


def compare_vocoders(
    tokenizer: Any, encoding: Any, others: dict[str, Any], repeats: int = 3
) -> dict[str, dict[str, float]]:
    """Decode seconds (codec decoder + vocoder, best of ``repeats``) of one encoding with the model's
    vocoder and with each of ``others`` (name -> vocoder), on the same synthesis features."""
    codes = tokenizer.ids_to_codes(encoding.ids)
    speaker = tokenizer.speaker_vector(encoding.speaker)
    chunk = (
        None
        if tokenizer.chunk_codes is None
        else tokenizer.chunk_codes * tokenizer.codec.synthesis_frames_per_code
    )
    runs = [_timed(lambda: tokenizer.synthesis_features(codes, speaker)) for _ in range(repeats)]
    features = runs[0][0]
    codec_s = min(seconds for _, seconds in runs)
    result = {}
    for name, vocoder in [(tokenizer.vocoder.name, tokenizer.vocoder), *others.items()]:
        if name in result:
            continue  # the model's own vocoder is timed once
        vocoder.synthesize(features[:, :200], speaker)  # warm-up
        vocoder_s = min(
            _timed(lambda v=vocoder: v.synthesize(features, speaker, chunk_frames=chunk))[1]
            for _ in range(repeats)
        )
        result[name] = {
            "codec_decoder_s": codec_s,
            "vocoder_s": vocoder_s,
            "decode_s": codec_s + vocoder_s,
            "best_of": repeats,
        }
    return result


def _timed(function: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = function()
    return value, time.perf_counter() - start


def benchmark(
    target: BenchTarget,
    durations: list[float],
    batch_clips: int = 8,
    batch_seconds: float = 10.0,
    audio: np.ndarray | None = None,
    progress: bool = True,
    compare: Callable[[Any], dict[str, dict[str, float]]] | None = None,
) -> dict[str, Any]:
    """Run the benchmark; returns a JSON-serialisable dict (see module docstring).

    Args:
        target: what to benchmark.
        durations: input lengths in seconds for the RTF rows.
        batch_clips / batch_seconds: the batch-throughput workload.
        audio: float32 ``(samples,)`` at ``target.sample_rate`` to tile; None = :func:`speech_like`.
        compare: ``compare(state)`` of the longest input -> per-vocoder decode seconds
            (:func:`compare_vocoders`).
    """
    from tqdm import tqdm

    rate = target.sample_rate

    def make(seconds: float, seed: int = 0) -> np.ndarray:
        samples = int(round(seconds * rate))
        if audio is not None:
            return np.resize(np.asarray(audio, np.float32), samples)
        return speech_like(seconds, rate, seed)

    make(1.0)  # warm-up: load weights, JIT, allocator
    target.decode(target.encode(make(1.0)))
    rows = []
    codes = None
    for seconds in tqdm(durations, desc="durations", disable=not progress, unit="input"):
        wav = make(seconds)
        state, encode_s = _timed(lambda wav=wav: target.encode(wav))
        _, decode_s = _timed(lambda state=state: target.decode(state))
        found = target.codes(state)
        if found is not None and (codes is None or len(found) > len(codes)):
            codes = found
        rows.append(
            {
                "seconds": seconds,
                "encode_s": encode_s,
                "decode_s": decode_s,
                "encode_rtf": encode_s / seconds,
                "decode_rtf": decode_s / seconds,
                "peak_rss_mb": _peak_rss_mb(),
            }
        )
    clips = [make(batch_seconds, seed=i + 1) for i in range(batch_clips)]
    start = time.perf_counter()
    for clip in tqdm(clips, desc="batch", disable=not progress, unit="clip"):
        target.decode(target.encode(clip))
    batch_wall = time.perf_counter() - start
    batch = {
        "clips": batch_clips,
        "clip_seconds": batch_seconds,
        "wall_s": batch_wall,
        "audio_hours_per_compute_hour": batch_clips * batch_seconds / batch_wall,
        "peak_rss_mb": _peak_rss_mb(),
    }
    profile = vocoders = None
    if target.profile is not None or compare is not None:
        longest = target.encode(make(max(durations)))
        if target.profile is not None:
            profile = {"seconds": max(durations), **target.profile(longest)}
        if compare is not None:
            vocoders = {"seconds": max(durations), "decode": compare(longest)}
    bpe = None
    if target.bpe_encode is not None and target.bpe_decode is not None and codes is not None and len(codes):
        stream = np.resize(codes, max(len(codes), 200_000)).astype(np.int64)
        ids, encode_s = _timed(lambda: target.bpe_encode(stream))
        back, decode_s = _timed(lambda: target.bpe_decode(ids))
        bpe = {
            "codes": int(len(stream)),
            "tokens": len(ids),
            "encode_codes_per_s": len(stream) / encode_s,
            "decode_codes_per_s": len(stream) / decode_s,
            "lossless": bool(np.array_equal(np.asarray(back), stream)),
        }
    return {
        "target": target.name,
        "sample_rate": rate,
        "input": "tiled audio file" if audio is not None else "generated speech-like audio",
        "rtf": rows,
        "batch": batch,
        "bpe": bpe,
        "decode_profile": profile,
        "vocoder_comparison": vocoders,
        "peak_rss_mb": _peak_rss_mb(),
        "machine": machine_info(),
    }


def markdown_table(result: dict[str, Any]) -> str:
    """Human-readable Markdown summary of :func:`benchmark`'s result."""
    machine = result["machine"]
    lines = [
        f"Benchmark of `{result['target']}` on {machine['cpu']} ({machine['usable_cores']} usable of "
        f"{machine['logical_cores']} cores, torch {machine['torch']}, {machine['torch_threads']} threads); "
        f"input: {result['input']}",
        "",
        "| input s | encode s | decode s | encode RTF | decode RTF | peak RSS MB |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["rtf"]:
        lines.append(
            f"| {row['seconds']:g} | {row['encode_s']:.2f} | {row['decode_s']:.2f} | "
            f"{row['encode_rtf']:.3f} | {row['decode_rtf']:.3f} | {row['peak_rss_mb']:.0f} |"
        )
    batch = result["batch"]
    lines += [
        "",
        f"Batch: {batch['clips']} x {batch['clip_seconds']:g} s encode+decode in {batch['wall_s']:.1f} s "
        f"= **{batch['audio_hours_per_compute_hour']:.2f} h of audio per hour of compute**.",
    ]
    if result.get("decode_profile"):
        profile = dict(result["decode_profile"])
        seconds = profile.pop("seconds")
        total = sum(profile.values())
        parts = ", ".join(
            f"{key[:-2].replace('_', ' ')} {value:.2f} s ({value / total:.0%})"
            for key, value in profile.items()
        )
        lines.append(f"Decode profile ({seconds:g} s of audio): {parts}.")
    if result.get("vocoder_comparison"):
        comparison = result["vocoder_comparison"]
        rows = comparison["decode"]
        first = next(iter(rows))
        parts = ", ".join(
            f"{name} {row['decode_s']:.2f} s (vocoder {row['vocoder_s']:.2f} s; "
            f"{row['decode_s'] / rows[first]['decode_s']:.2f}x of {first})"
            for name, row in rows.items()
        )
        lines.append(
            f"Decode of the same {comparison['seconds']:g} s of codes, best of {rows[first]['best_of']}: {parts}."
        )
    if result["bpe"]:
        bpe = result["bpe"]
        lines.append(
            f"BPE: {bpe['codes']} codes -> {bpe['tokens']} tokens; encode {bpe['encode_codes_per_s']:,.0f} codes/s, "
            f"decode {bpe['decode_codes_per_s']:,.0f} codes/s, lossless: {bpe['lossless']}."
        )
    lines.append(f"Peak resident memory: {result['peak_rss_mb']:.0f} MB (process peak, ru_maxrss).")
    return "\n".join(lines) + "\n"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``bench`` arguments to ``parser``."""
    parser.add_argument(
        "--model", metavar="DIR", default=None, help="model directory (default: the bundled model)"
    )
    parser.add_argument(
        "--copy-synthesis",
        action="store_true",
        help="benchmark the model's log-mel analysis + vocoder alone (no codec, no BPE)",
    )
    parser.add_argument(
        "--durations", default="10,60,600", help="input lengths in seconds (default: %(default)s)"
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=8,
        metavar="N",
        help="clips in the throughput batch (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-seconds", type=float, default=10.0, help="length of each batch clip (default: %(default)s)"
    )
    parser.add_argument(
        "--audio", default=None, metavar="FILE", help="speech file to tile instead of generated audio"
    )
    parser.add_argument(
        "--compare-vocoder",
        action="append",
        default=[],
        metavar="NAME",
        help="also time decoding the longest input with this registered vocoder (e.g. hifigan-16k); repeatable",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", default=None, metavar="FILE", help="also write the result as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Run ``plutok bench``; prints a Markdown table, returns the exit status."""
    try:
        try:
            durations = [float(d) for d in str(args.durations).split(",") if d.strip()]
        except ValueError:
            raise PlutokError(
                f"--durations must be comma-separated seconds, got {args.durations!r}"
            ) from None
        if not durations or min(durations) <= 0 or args.batch < 0 or args.batch_seconds <= 0:
            raise PlutokError("--durations, --batch-seconds must be positive and --batch non-negative")
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        import plutok

        tokenizer = plutok.Plutok.from_pretrained(args.model)
        if args.copy_synthesis:
            target = BenchTarget.copy_synthesis(tokenizer)
        else:
            target = BenchTarget.from_tokenizer(
                tokenizer, "plutok" if args.model is None else f"plutok:{args.model}"
            )
        audio = None
        if args.audio:
            from plutok.audio import load_audio

            audio = load_audio(args.audio, target.sample_rate)[0]
        compare = None
        if args.compare_vocoder and args.copy_synthesis:
            raise PlutokError(
                "--compare-vocoder times a model's decode; it does not apply to --copy-synthesis"
            )
        if args.compare_vocoder:
            from plutok import registry

            others = {name: registry.build("vocoder", {"name": name}) for name in args.compare_vocoder}
            for name, vocoder in others.items():
                if (vocoder.feature_dim, vocoder.hop_length) != (
                    tokenizer.vocoder.feature_dim,
                    tokenizer.vocoder.hop_length,
                ):
                    raise PlutokError(
                        f"--compare-vocoder {name} reads other features than this model's codec writes"
                    )
            compare = lambda encoding: compare_vocoders(tokenizer, encoding, others)  # noqa: E731
        result = benchmark(
            target, durations, args.batch, args.batch_seconds, audio, progress=not args.quiet, compare=compare
        )
        result["command"] = " ".join(getattr(args, "argv", None) or sys.argv)
        if args.out:
            from plutok.files import atomic_write_text

            atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    except PlutokError as error:
        print(f"plutok bench: error: {error}", file=sys.stderr)
        return 1
    print(markdown_table(result), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m plutok.bench ...``."""
    parser = argparse.ArgumentParser(prog="plutok bench", description=__doc__.splitlines()[0])
    configure_parser(parser)
    args = parser.parse_args(argv)
    args.argv = ["plutok", "bench", *(sys.argv[1:] if argv is None else argv)]
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
