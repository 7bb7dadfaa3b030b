"""Paired comparison of two evaluated systems on the same utterances, with standard errors.

Two systems scored on the same clips differ clip by clip far less than their averages
vary between clips, so the difference of the per-clip scores — not of the two averages —
says whether one is better. For each metric this reports the mean paired difference
``B - A`` and its standard error (``sd / sqrt(n)``), over all shared clips and per group
(source, speaker, language):

    python -m plutok.evaluation.paired eval-out/results.json codec2-1200 plutok
    python -m plutok.evaluation.paired run-a/results.json plutok run-b/results.json plutok --group source

Words are compared as counts: ``WER - reference WER`` is a corpus-level figure (errors over
all words), so its difference is ``sum(errors_B - errors_A) / sum(words)`` and its standard
error ``sqrt(n) * sd(errors_B - errors_A) / sum(words)``, in WER points. The reference's own
errors cancel in the difference.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PairedDifference", "paired_differences", "parse_where", "main"]

METRICS = ("wer", "stoi", "speaker_similarity")


@dataclass(frozen=True)
class PairedDifference:
    """``B - A`` on one metric over ``clips`` shared clips (WER in points, others in their unit)."""

    metric: str
    group: str
    clips: int
    system_a: float
    system_b: float
    difference: float
    standard_error: float

    @property
    def standard_errors(self) -> float:
        """``|difference|`` in standard errors (inf when every clip moved by the same amount)."""
        if self.standard_error == 0:
            return math.inf if self.difference else 0.0
        return abs(self.difference) / self.standard_error


def _mean_and_se(values: list[float]) -> tuple[float, float]:
    count = len(values)
    mean = sum(values) / count
    if count < 2:
        return mean, math.nan
    variance = sum((v - mean) ** 2 for v in values) / (count - 1)
    return mean, math.sqrt(variance / count)


def _difference(metric: str, group: str, rows_a: list[dict], rows_b: list[dict]) -> PairedDifference | None:
    if metric == "wer":
        # A system scored without the ASR (``--metrics stoi,...``) has no word errors.
        pairs = [
            (a, b)
            for a, b in zip(rows_a, rows_b, strict=True)
            if a.get("words") and a.get("word_errors") is not None and b.get("word_errors") is not None
        ]
        words = sum(a["words"] for a, _ in pairs)
        if not words:
            return None
        deltas = [b["word_errors"] - a["word_errors"] for a, b in pairs]
        _, se = _mean_and_se([float(d) for d in deltas])
        return PairedDifference(
            metric,
            group,
            len(pairs),
            100.0 * sum(a["word_errors"] for a, _ in pairs) / words,
            100.0 * sum(b["word_errors"] for _, b in pairs) / words,
            100.0 * sum(deltas) / words,
            100.0 * se * len(pairs) / words,
        )
    pairs = [(a.get(metric), b.get(metric)) for a, b in zip(rows_a, rows_b, strict=True)]
    pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
    if not pairs:
        return None
    mean, se = _mean_and_se([b - a for a, b in pairs])
    return PairedDifference(
        metric,
        group,
        len(pairs),
        sum(a for a, _ in pairs) / len(pairs),
        sum(b for _, b in pairs) / len(pairs),
        mean,
        se,
    )


def paired_differences(
    results_a: dict[str, Any],
    system_a: str,
    results_b: dict[str, Any],
    system_b: str,
    group_by: str | None = None,
    where: tuple[str, set[str]] | None = None,
) -> list[PairedDifference]:
    """``B - A`` per metric on the clips both systems scored, over all and per ``group_by`` value.

    Args:
        results_a, results_b: ``results.json`` of ``plutok eval`` (may be the same run).
        system_a, system_b: system names in them (``plutok``, ``codec2-1200``, ...).
        group_by: an utterance field (``source``, ``speaker``, ``language``, ``kind``) or None.
        where: ``(field, values)``: only the clips whose ``field`` is one of ``values``.
    """
    for results, name in ((results_a, system_a), (results_b, system_b)):
        if name not in results["rows"]:
            raise KeyError(f"no system {name!r} in these results; they hold {sorted(results['rows'])}")
    rows_a = {row["id"]: row for row in results_a["rows"][system_a]}
    rows_b = {row["id"]: row for row in results_b["rows"][system_b]}
    meta = {u["id"]: u for u in results_a["utterances"]}
    shared = [clip for clip in rows_a if clip in rows_b]
    if where is not None:
        field, values = where
        shared = [clip for clip in shared if str(meta.get(clip, {}).get(field)) in values]
    groups: dict[str, list[str]] = {"all": shared}
    if group_by:
        for clip in shared:
            groups.setdefault(str(meta.get(clip, {}).get(group_by)), []).append(clip)
    found = []
    for group, clips in groups.items():
        for metric in METRICS:
            difference = _difference(metric, group, [rows_a[c] for c in clips], [rows_b[c] for c in clips])
            if difference is not None:
                found.append(difference)
    return found


def parse_where(text: str) -> tuple[str, set[str]]:
    """``"FIELD=V1,V2"`` as ``(field, {values})``; ValueError without ``=`` or values."""
    field, _, values = text.partition("=")
    if not field or not values:
        raise ValueError("--where takes FIELD=V1,V2")
    return field, set(values.split(","))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m plutok.evaluation.paired",
        description="Paired per-clip differences B - A between two evaluated systems, with standard errors.",
    )
    parser.add_argument("specs", nargs="+", help="RESULTS_A SYSTEM_A [RESULTS_B] SYSTEM_B")
    parser.add_argument("--group", help="also per value of this utterance field (source, speaker, language)")
    parser.add_argument(
        "--where", metavar="FIELD=V1,V2", help="only clips whose utterance FIELD is one of the values"
    )
    args = parser.parse_args(argv)
    if len(args.specs) == 3:
        path_a, system_a, system_b = args.specs
        path_b = path_a
    elif len(args.specs) == 4:
        path_a, system_a, path_b, system_b = args.specs
    else:
        parser.error("give RESULTS_A SYSTEM_A [RESULTS_B] SYSTEM_B")
    results_a = json.loads(Path(path_a).read_text("utf-8"))
    results_b = results_a if path_b == path_a else json.loads(Path(path_b).read_text("utf-8"))
    where = None
    if args.where:
        try:
            where = parse_where(args.where)
        except ValueError as error:
            parser.error(str(error))
    try:
        rows = paired_differences(results_a, system_a, results_b, system_b, args.group, where)
    except KeyError as error:
        print(f"error: {error.args[0]}", file=sys.stderr)
        return 2
    print(f"B - A; A = {system_a} ({path_a}), B = {system_b} ({path_b})")
    print("| group | metric | clips | A | B | B - A | standard error | in SEs |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        digits = 1 if row.metric == "wer" else 3
        print(
            f"| {row.group} | {row.metric} | {row.clips} | {row.system_a:.{digits}f} | {row.system_b:.{digits}f} | "
            f"{row.difference:+.{digits}f} | {row.standard_error:.{digits}f} | {row.standard_errors:.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
