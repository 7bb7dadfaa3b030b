"""Time and peak memory of encoding/decoding long recordings (docs/benchmarks.md, "Long audio").

Each measurement runs in a fresh Python process, so its ``ru_maxrss`` is the peak
resident memory of that one job (model load included)::

    python scripts/long_audio_benchmark.py --minutes 10 60 --stage encode decode
    python scripts/long_audio_benchmark.py --minutes 10 --model path/to/model --chunk-seconds 30

The input is real speech tiled to the requested length (the pocketsphinx LibriVox
test clips when installed, else ``src/plutok/assets/sample.flac``), written as 16 kHz
16-bit wav. Without ``--model`` the bundled default model is used if present, else
a random-weight stand-in with the default model's architecture (mel backbone with 16
speaker coefficients, VQ-VAE h=80, downsample 4, 1024 codes; BPE 4096): speed and
memory depend on the architecture, not on the weights.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")


def speech_source() -> tuple[np.ndarray, str]:
    from plutok.audio import load_audio

    clips = sorted(LIBRIVOX.glob("*.wav"))
    if clips:
        return np.concatenate([load_audio(clip, 16000)[0] for clip in clips]), f"{LIBRIVOX}/*.wav"
    sample = Path(__file__).resolve().parents[1] / "plutok" / "assets" / "sample.flac"
    return load_audio(sample, 16000)[0], str(sample)


def make_input(minutes: float, directory: Path) -> Path:
    import soundfile as sf

    speech, _ = speech_source()
    total = int(minutes * 60 * 16000)
    path = directory / f"speech_{minutes:g}min.wav"
    with sf.SoundFile(path, "w", 16000, 1, subtype="PCM_16") as handle:
        written = 0
        while written < total:
            piece = speech[: total - written]
            handle.write(piece)
            written += piece.shape[0]
    return path


def stand_in_model(directory: Path) -> Path:
    import torch

    from plutok.bpe import CodeBPE
    from plutok.legacy.backbones.mel import MelBackbone
    from plutok.legacy.vqvae import VQVAE, VQVAEConfig
    from plutok.tokenizer import Plutok

    torch.manual_seed(0)
    backbone = MelBackbone(speaker_coefficients=16)
    vqvae = VQVAE(VQVAEConfig(feature_dim=80, codebook_size=1024, downsample=4)).eval()
    speech, _ = speech_source()
    features, _ = backbone.analyze(speech)
    codes = [
        vqvae.encode(features[:, start : start + 500]) for start in range(0, features.shape[1] - 500, 250)
    ]
    bpe = CodeBPE.train(codes, 1024, vocab_size=4096, min_frequency=1, progress=False)
    path = directory / "stand-in-model"
    Plutok.from_backbone(backbone, vqvae, bpe, metadata={"description": "random-weight stand-in"}).save(path)
    return path


def measure(stage: str, model: str, audio: Path, plt: Path, chunk: float | None, threads: int) -> dict:
    """Run one stage in this (fresh) process and report time and peak memory."""
    import torch

    from plutok.tokenizer import Plutok

    torch.set_num_threads(threads)
    tok = Plutok.from_pretrained(model, chunk_seconds=chunk)
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    if stage == "encode":
        encoding = tok.encode_file(audio)
        tok.save_plt(encoding, plt)
        duration = encoding.duration
    else:
        encoding = tok.load_plt(plt)
        wav, _ = tok.decode(encoding)
        duration = wav.shape[0] / tok.sample_rate
    seconds = time.perf_counter() - started
    return {
        "stage": stage,
        "audio_s": round(duration, 1),
        "wall_s": round(seconds, 1),
        "rtf": round(seconds / duration, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "rss_after_model_load_mb": round(loaded / 1024),
        "chunk_seconds": chunk,
    }


def seam_plot(path: Path, chunk_seconds: float = 3.0) -> float:
    """Spectrogram of real speech vocoded in chunks around the first join, next to one pass.

    Returns the largest absolute sample difference between the two.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from plutok.legacy.backbones.mel import MelBackbone

    backbone = MelBackbone()
    speech, source = speech_source()
    log_mel = backbone.log_mel(speech[: 8 * 16000])
    chunk = int(chunk_seconds * 100)
    one_pass = backbone.vocode(log_mel, chunk_frames=None)
    chunked = backbone.vocode(log_mel, chunk_frames=chunk)
    join = chunk * 160  # first join, in samples
    window = slice(join - 8000, join + 8000)
    figure, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    for axis, wav, title in ((axes[0], chunked, "chunked"), (axes[1], one_pass, "one pass")):
        axis.specgram(wav[window], NFFT=512, Fs=16000, noverlap=384, cmap="magma")
        axis.axvline(0.5, color="cyan", linestyle="--", linewidth=0.8)
        axis.set_title(f"{title} vocoding, 1 s around the join at {join / 16000:.1f} s (dashed)")
        axis.set_ylabel("Hz")
    difference = chunked[window] - one_pass[window]
    axes[2].plot(np.arange(difference.shape[0]) / 16000, difference, linewidth=0.6)
    axes[2].set_title(f"chunked - one pass (max |diff| {np.abs(chunked - one_pass).max():.1e} over 8 s)")
    axes[2].set_xlabel("seconds")
    figure.suptitle(f"HiFi-GAN vocoder, {chunk}-frame chunks + 32 frames context; {Path(source).name}")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    return float(np.abs(chunked - one_pass).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[10.0, 60.0])
    parser.add_argument("--stage", nargs="+", choices=["encode", "decode"], default=["encode", "decode"])
    parser.add_argument("--model", default=None, help="model directory (default: bundled, else a stand-in)")
    parser.add_argument("--chunk-seconds", type=float, default=30.0, help="0 = one pass (unchunked)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", default=None, help="keep inputs/outputs here (default: a temp dir)")
    parser.add_argument("--seam-png", metavar="PNG", help="only draw the spectrogram around a chunk join")
    parser.add_argument("--_run", nargs=4, metavar=("STAGE", "MODEL", "AUDIO", "PLT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    chunk = args.chunk_seconds or None
    if args.seam_png:
        print(f"max |chunked - one pass| = {seam_plot(Path(args.seam_png)):.2e}")
        return
    if args._run:
        stage, model, audio, plt = args._run
        print(json.dumps(measure(stage, model, Path(audio), Path(plt), chunk, args.threads)))
        return

    from plutok.tokenizer import default_model_path

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="plutok-long-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.model:
        model, model_name = args.model, args.model
    elif (default_model_path() / "config.json").is_file():
        model, model_name = str(default_model_path()), "bundled default"
    else:
        model, model_name = str(stand_in_model(workdir)), "random-weight stand-in (default architecture)"
    print(f"# model: {model_name}; source: {speech_source()[1]}; chunk_seconds: {chunk}", flush=True)
    for minutes in args.minutes:
        audio = make_input(minutes, workdir)
        plt = audio.with_suffix(".plt")
        for stage in args.stage:
            command = [sys.executable, __file__, "--_run", stage, model, str(audio), str(plt)]
            command += ["--chunk-seconds", str(args.chunk_seconds), "--threads", str(args.threads)]
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode:
                print(f"{stage} {minutes} min failed: {result.stderr.strip().splitlines()[-1:]}", flush=True)
                continue
            print(result.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
