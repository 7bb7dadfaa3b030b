"""``plutok convert``: the original Plutok release -> a Plutok model directory.

The original release is three files: the OpenVoice tone-color converter
(``ckpt/converter/config.json`` + ``checkpoint.pth``), the VQ-VAE
(``outputs/vqvae/model.pth``, a bare state dict) and the BPE vocabulary over ``#N``
code strings (``outputs/tokenizer/tokenizer.json``). Converting loads them with
:meth:`plutok.Plutok.from_openvoice` (pickle-free: ``weights_only=True``) and saves a
model directory (``config.json``, safetensors weights, the tokenizer unchanged), then
reloads it and checks that it gives the same tokens and the same audio.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
from pathlib import Path

import numpy as np

from plutok.errors import ModelError

__all__ = ["configure_parser", "run", "convert_release", "release_paths"]

# Where the original release keeps its files, relative to the release root.
RELEASE_CONVERTER = Path("ckpt") / "converter"
RELEASE_VQVAE = Path("outputs") / "vqvae" / "model.pth"
RELEASE_TOKENIZER = Path("outputs") / "tokenizer" / "tokenizer.json"
# Seconds of test signal the check after saving encodes and decodes.
_VERIFY_SECONDS = 1.0


def release_paths(
    release: str | Path | None = None,
    checkpoint: str | Path | None = None,
    vqvae: str | Path | None = None,
    tokenizer: str | Path | None = None,
) -> tuple[Path, Path, Path]:
    """The converter folder, VQ-VAE checkpoint and tokenizer file to convert.

    Explicit paths win; the others come from the release root's layout
    (``ckpt/converter``, ``outputs/vqvae/model.pth``, ``outputs/tokenizer/tokenizer.json``).
    A ``checkpoint`` folder that holds ``converter/`` (OpenVoice's ``ckpt/``) is accepted too.
    """
    root = Path(release) if release is not None else None
    if root is not None and not root.is_dir():
        raise ModelError(f"{root}: release folder not found")
    found: list[Path] = []
    for given, default, what in (
        (checkpoint, RELEASE_CONVERTER, "--checkpoint (OpenVoice converter folder)"),
        (vqvae, RELEASE_VQVAE, "--vqvae (outputs/vqvae/model.pth)"),
        (tokenizer, RELEASE_TOKENIZER, "--tokenizer (outputs/tokenizer/tokenizer.json)"),
    ):
        if given is not None:
            found.append(Path(given))
        elif root is not None:
            found.append(root / default)
        else:
            raise ModelError(f"give --release ROOT or {what}")
    converter, vqvae_path, tokenizer_path = found
    if (converter / "converter").is_dir():
        converter = converter / "converter"
    for path, kind in (
        (converter / "config.json", "converter config"),
        (converter / "checkpoint.pth", "converter checkpoint"),
        (vqvae_path, "VQ-VAE checkpoint"),
        (tokenizer_path, "tokenizer"),
    ):
        if not path.is_file():
            raise ModelError(f"{path}: {kind} not found")
    return converter, vqvae_path, tokenizer_path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _test_signal(sample_rate: int) -> np.ndarray:
    """A fixed voiced-like signal (harmonics with a moving pitch and a syllable envelope)."""
    time = np.arange(int(_VERIFY_SECONDS * sample_rate)) / sample_rate
    phase = 2 * np.pi * np.cumsum(130 + 25 * np.sin(2 * np.pi * 0.8 * time)) / sample_rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 3 * time)) ** 2
    return (0.1 * envelope * voiced).astype(np.float32)


def convert_release(
    converter: str | Path,
    vqvae: str | Path,
    tokenizer: str | Path,
    output: str | Path,
    description: str | None = None,
    verify: bool = True,
):
    """Convert the original release's files into the model directory ``output``.

    Returns:
        The converted :class:`plutok.Plutok` (as loaded from the original files).
    Raises:
        ModelError: unreadable or mismatched inputs, or a saved model that does not
            reload to the same tokens and audio (``output`` is then removed).
    """
    from plutok.tokenizer import Plutok

    converter, vqvae, tokenizer, output = Path(converter), Path(vqvae), Path(tokenizer), Path(output)
    model = Plutok.from_openvoice(converter, vqvae=vqvae, tokenizer=tokenizer)
    model.metadata["description"] = description or "original Plutok release (OpenVoice), converted"
    model.metadata["converted_from"] = {
        "converter_checkpoint_sha256": _sha256(converter / "checkpoint.pth"),
        "converter_config_sha256": _sha256(converter / "config.json"),
        "vqvae_sha256": _sha256(vqvae),
        "tokenizer_sha256": _sha256(tokenizer),
    }
    model.save(output)
    if verify:
        try:
            _verify(model, Plutok.from_pretrained(output), output)
        except BaseException:
            shutil.rmtree(output, ignore_errors=True)  # leave no model that fails the check
            raise
    return model


def _verify(original, reloaded, output: Path) -> None:
    if reloaded.fingerprint != original.fingerprint:
        raise ModelError(f"{output}: the saved model reloads with another fingerprint; conversion failed")
    signal = _test_signal(original.sample_rate)
    first = original.encode(signal, original.sample_rate)
    second = reloaded.encode(signal, original.sample_rate)
    if first.ids != second.ids:
        raise ModelError(f"{output}: the saved model gives other tokens than the original files")
    if not np.array_equal(original.decode(first)[0], reloaded.decode(second)[0]):
        raise ModelError(f"{output}: the saved model decodes to other audio than the original files")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``plutok convert``."""
    parser.epilog = (
        "example: plutok convert --release plutok-v0.1/ -o plutok-original/   "
        "(or --checkpoint ckpt/converter --vqvae outputs/vqvae/model.pth "
        "--tokenizer outputs/tokenizer/tokenizer.json)"
    )
    parser.add_argument(
        "--release",
        metavar="ROOT",
        help="release folder with ckpt/converter/, outputs/vqvae/model.pth, outputs/tokenizer/tokenizer.json",
    )
    parser.add_argument(
        "--checkpoint", metavar="CKPT_DIR", help="OpenVoice converter folder (config.json + checkpoint.pth)"
    )
    parser.add_argument("--vqvae", metavar="MODEL.pth", help="original VQ-VAE checkpoint")
    parser.add_argument("--tokenizer", metavar="TOKENIZER.json", help="original BPE tokenizer file")
    parser.add_argument("-o", "--output", metavar="MODEL_DIR", required=True, help="model directory to write")
    parser.add_argument("--description", default=None, help="free text stored in the model's config")
    parser.add_argument("--force", action="store_true", help="replace an existing model directory")
    parser.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="skip reloading the saved model and comparing tokens and audio",
    )


def run(args: argparse.Namespace) -> int:
    """Handler of ``plutok convert``."""
    output = Path(args.output)
    if output.exists() and not args.force and (not output.is_dir() or any(output.iterdir())):
        raise ModelError(f"{output} exists; pass --force to replace it")
    converter, vqvae, tokenizer = release_paths(args.release, args.checkpoint, args.vqvae, args.tokenizer)
    model = convert_release(
        converter, vqvae, tokenizer, output, description=args.description, verify=args.verify
    )
    checked = "reloaded: same tokens and audio" if args.verify else "not verified"
    print(
        f"converted {converter} + {vqvae.name} + {tokenizer.name}: {model.frontend.name} frontend, "
        f"{model.codebook_size} codes, {model.vocab_size} tokens; {checked} -> {output}"
    )
    return 0
