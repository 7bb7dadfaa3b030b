#!/usr/bin/env bash
# Install what `plutok corpus build` needs: the training speech of docs/corpus.md (Debian
# packages), the synthesisers (espeak-ng, flite, Festival + voices, Piper, Kokoro)
# and the offline text sources (fortunes). The package lists live in one place,
# src/plutok/corpus/__init__.py (APT_PACKAGES, PIP_PACKAGES).
# Usage (as root, from the repository root, in the project venv):
#   scripts/install_corpus_tools.sh [--no-pip]
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m plutok.corpus install "$@"
