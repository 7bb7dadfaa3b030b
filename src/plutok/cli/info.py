"""``plutok info``: facts about a model directory (default: the bundled model) or a ``.plt`` file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path",
        nargs="?",
        metavar="MODEL_DIR|NAME|FILE.plt",
        help="a model folder, a bundled model (v1, fast) or a .plt file; default: the bundled default",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    target = Path(args.path) if args.path else None
    if target is not None and target.is_file() and target.suffix == ".plt":
        from plutok.catalog import retired_model
        from plutok.container import read_plt

        plt = read_plt(target)
        retired = retired_model(plt.fingerprint)
        duration = plt.num_samples / plt.sample_rate
        facts = {
            "file": str(target),
            "format": "plt v1",
            "model_fingerprint": plt.fingerprint.hex(),
            "sample_rate": plt.sample_rate,
            "num_samples": plt.num_samples,
            "duration_s": round(duration, 3),
            "tokens": len(plt.ids),
            "tokens_per_second": round(len(plt.ids) / duration, 2) if duration else 0.0,
            "speaker_dim": int(plt.speaker.shape[0]),
            "file_bytes": target.stat().st_size,
            "file_bits_per_second": round(8 * target.stat().st_size / duration, 1) if duration else 0.0,
        }
        if retired is not None:  # made by a model this version no longer ships: say which, and where it is
            facts["model"] = f"{retired.describe()}, no longer shipped; {retired.where_to_decode()}"
    else:
        from plutok.api import Plutok

        tok = Plutok.from_pretrained(args.path)  # a folder, or a bundled name such as v1 or fast
        facts = tok.info()
        facts["model"] = args.path or "bundled default"
    if args.json:
        print(json.dumps(facts, indent=2))
    else:
        width = max(len(key) for key in facts)
        for key, value in facts.items():
            print(f"{key:<{width}}  {value}")
    return 0
