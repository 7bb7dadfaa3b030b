"""Tokens per second of a model on a manifest, per language (encode only, fast).

python scripts/token_rates.py MODEL_DIR data/corpus/dev-eval.jsonl
"""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path

from plutok import Plutok
from plutok.audio import load_audio


def main() -> None:
    tok = Plutok.from_pretrained(sys.argv[1])
    manifest = Path(sys.argv[2])
    tokens: collections.Counter[str] = collections.Counter()
    seconds: collections.Counter[str] = collections.Counter()
    for line in manifest.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        wav, rate = load_audio(manifest.parent / row["path"])
        encoding = tok.encode(wav, rate)
        tokens[row["language"]] += len(encoding.ids)
        seconds[row["language"]] += encoding.duration
    rates = {language: round(tokens[language] / seconds[language], 1) for language in sorted(tokens)}
    print(json.dumps({"per_language": rates, "all": round(sum(tokens.values()) / sum(seconds.values()), 1)}))


if __name__ == "__main__":
    main()
