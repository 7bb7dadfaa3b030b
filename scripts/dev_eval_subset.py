"""Write the fixed dev-evaluation subset: the first N dev utterances (by id) of every
(language, real/synthetic) group of a corpus manifest.

    python scripts/dev_eval_subset.py data/corpus/manifest.jsonl data/corpus/dev-eval.jsonl [N=6]

Small enough for `plutok eval` with every metric and baseline on a 2-core CPU in
minutes, and it still covers every dev language and both kinds of speech.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path


def main() -> None:
    source, target = Path(sys.argv[1]), Path(sys.argv[2])
    per_group = int(sys.argv[3]) if len(sys.argv) > 3 else 6
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for line in source.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row.get("split") == "dev":
            groups[(row["language"], row.get("kind", ""))].append(row)
    chosen = [row for key in sorted(groups) for row in sorted(groups[key], key=lambda r: r["id"])[:per_group]]
    if target.parent.resolve() != source.parent.resolve():
        raise SystemExit("write the subset beside the manifest: its audio paths are relative to that folder")
    target.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in chosen), encoding="utf-8")
    seconds = sum(row["duration"] for row in chosen)
    print(f"{len(chosen)} utterances, {seconds / 60:.1f} min, {len(groups)} groups -> {target}")


if __name__ == "__main__":
    main()
