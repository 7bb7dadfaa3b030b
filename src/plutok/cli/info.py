"""``plutok info``: facts about a model directory (default: the bundled model) or a ``.plt`` file."""

from __future__ import annotations

import argparse
import json
import shutil
import textwrap
from pathlib import Path
from typing import Any


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
        print(readable(facts, shutil.get_terminal_size((100, 24)).columns))
    return 0


def readable(facts: dict[str, Any], columns: int = 100) -> str:
    """``key  value`` lines aligned on the values; long values wrapped under them, dicts as indented keys."""
    lines: list[str] = []
    _add(lines, facts, indent="", columns=max(columns, 60))
    return "\n".join(lines)


def _add(lines: list[str], facts: dict[str, Any], indent: str, columns: int) -> None:
    width = max((len(str(key)) for key in facts), default=0)
    for key, value in facts.items():
        label = f"{indent}{str(key):<{width}}  "
        if isinstance(value, dict) and value:
            lines.append(f"{indent}{key}")
            _add(lines, value, indent + "  ", columns)
            continue
        text = (
            value
            if isinstance(value, str)
            else json.dumps(value)
            if isinstance(value, (list, dict))
            else str(value)
        )
        # Keep at least 40 columns for the value, however long the labels are.
        wrapped = textwrap.wrap(
            text, width=max(columns - len(label), 40), break_on_hyphens=False, break_long_words=False
        ) or [""]
        lines.append(label + wrapped[0])
        lines.extend(" " * len(label) + line for line in wrapped[1:])
