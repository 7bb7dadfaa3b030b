"""Write ``results.json``, ``report.md`` and the figures of an evaluation run.

Figures (matplotlib, Agg backend, imported lazily):

- ``quality_vs_bitrate.png``: WER (CER where WER is undefined), STOI, PESQ-WB and speaker
  similarity against bits/s (log scale) for every system; systems without a bitrate
  (copy-synthesis) are dashed horizontal lines.
- ``token_rate_<system>.png``: per-utterance tokens/s histogram per language, for each model.
- ``spectrograms.png``: log-magnitude spectrograms of up to 3 reference/decoded pairs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from plutok.evaluation.extras import require
from plutok.files import atomic_path, atomic_write_text

__all__ = ["write_report", "markdown_report"]

COLUMNS = (
    ("bits_per_second", "bits/s", "{:.0f}"),
    ("tokens_per_second", "tokens/s", "{:.1f}"),
    ("codes_per_second", "codes/s", "{:.1f}"),
    ("code_entropy_bits_per_second", "entropy bits/s", "{:.0f}"),
    ("wer", "WER %", "{:.1%}"),
    ("wer_minus_reference", "WER − ref", "{:+.1%}"),
    ("cer", "CER %", "{:.1%}"),
    ("stoi", "STOI", "{:.3f}"),
    ("pesq", "PESQ-WB", "{:.2f}"),
    ("speaker_similarity", "spk sim", "{:.3f}"),
    ("dnsmos_ovrl", "DNSMOS", "{:.2f}"),
    ("encode_rtf", "enc RTF", "{:.3f}"),
    ("decode_rtf", "dec RTF", "{:.3f}"),
)


def _fmt(value: Any, pattern: str) -> str:
    if value is None:
        return "–"
    return pattern.format(value).replace("%", "") if "%" in pattern else pattern.format(value)


def _table(rows: list[tuple[str, dict[str, Any]]]) -> list[str]:
    columns = [c for c in COLUMNS if any(summary.get(c[0]) is not None for _, summary in rows)]
    lines = ["| system | utts | hours | " + " | ".join(c[1] for c in columns) + " |"]
    lines.append("|---|---:|---:|" + "---:|" * len(columns))
    for name, summary in rows:
        cells = [_fmt(summary.get(key), pattern) for key, _, pattern in columns]
        lines.append(
            f"| {name} | {summary.get('utterances', 0)} | {summary.get('hours', 0.0):.3f} | "
            + " | ".join(cells)
            + " |"
        )
    return lines


def markdown_report(results: dict[str, Any], figures: dict[str, str]) -> str:
    """The Markdown text of ``report.md`` (``figures``: caption -> file name relative to the report)."""
    aggregates = results["aggregates"]
    names = ["reference"] + [s["name"] for s in results["systems"]]
    lines = ["# Plutok evaluation", ""]
    lines += [f"Command: `{results['command']}`", "", f"Data: `{results['data']}`"]
    lines += [f"({len(results['utterances'])} utterances, metrics: {', '.join(results['metrics'])})", ""]
    lines += ["`reference` is the original audio (its WER/CER is the ASR's own error on the originals);", ""]
    lines += [
        "`WER − ref` is a system's WER minus the reference WER on the same clips (percentage points).",
        "",
    ]
    lines += ["Each clip's errors are capped at its reference word/character count.", ""]
    lines += ["## All utterances", ""]
    lines += _table([(n, aggregates[n]["all"]) for n in names if n in aggregates])
    for field, title in (("language", "Per language"), ("kind", "Real vs synthetic")):
        values = sorted({v for n in names if n in aggregates for v in aggregates[n][field]})
        if not values:
            continue
        lines += ["", f"## {title}", ""]
        for value in values:
            lines += [f"### {value}", ""]
            lines += _table(
                [
                    (n, aggregates[n][field][value])
                    for n in names
                    if value in aggregates.get(n, {}).get(field, {})
                ]
            )
            lines.append("")
    lines += ["", "## Systems", ""]
    for system in results["systems"]:
        lines.append(
            f"- `{system['name']}`: " + ", ".join(f"{k}={v}" for k, v in system.items() if k != "name")
        )
    if results.get("errors"):
        lines += ["", "## Skipped", ""]
        lines += [f"- {e['system']} / {e['id']}: {e['error']}" for e in results["errors"]]
    if figures:
        lines += ["", "## Figures", ""]
        for caption, name in figures.items():
            lines += [f"![{caption}]({name})", ""]
    lines += ["", "## Versions", ""]
    lines += [f"- {k}: {v}" for k, v in results.get("versions", {}).items()]
    return "\n".join(lines).rstrip() + "\n"


def _save(figure: Any, path: Path) -> None:
    with atomic_path(path) as temporary:
        figure.savefig(str(temporary), format="png", dpi=110, bbox_inches="tight")


def _plot_quality(plt: Any, results: dict[str, Any], path: Path) -> bool:
    aggregates = results["aggregates"]
    panels = [
        ("wer", "WER (CER if no WER)"),
        ("stoi", "STOI"),
        ("pesq", "PESQ-WB"),
        ("speaker_similarity", "speaker similarity"),
    ]
    panels = [
        p
        for p in panels
        if any(
            aggregates[s["name"]]["all"].get(p[0]) is not None or p[0] == "wer" for s in results["systems"]
        )
    ]
    figure, axes = plt.subplots(2, 2, figsize=(11, 8))
    drawn = False
    for axis, (key, title) in zip(axes.flat, panels, strict=False):
        for system in results["systems"]:
            summary = aggregates[system["name"]]["all"]
            value = summary.get(key)
            if key == "wer" and value is None:
                value = summary.get("cer")
            if value is None:
                continue
            if key == "wer":
                value *= 100.0
            bits = summary.get("bits_per_second")
            marker = "*" if system.get("kind") == "model" else "o"
            if bits is None:
                axis.axhline(value, linestyle="--", linewidth=1, color="gray")
                axis.annotate(
                    system["name"],
                    (0.01, value),
                    xycoords=("axes fraction", "data"),
                    fontsize=8,
                    color="gray",
                )
            else:
                axis.scatter([bits], [value], marker=marker, s=90 if marker == "*" else 40)
                axis.annotate(
                    system["name"], (bits, value), textcoords="offset points", xytext=(4, 4), fontsize=8
                )
            drawn = True
        axis.set_xscale("log")
        axis.set_xlabel("bits/s (incl. speaker vector)")
        axis.set_ylabel(title + (" %" if key == "wer" else ""))
        axis.grid(True, which="both", alpha=0.3)
    for axis in list(axes.flat)[len(panels) :]:
        axis.set_visible(False)
    figure.suptitle("Quality vs bitrate")
    if drawn:
        _save(figure, path)
    plt.close(figure)
    return drawn


def _plot_token_rates(plt: Any, results: dict[str, Any], out: Path) -> dict[str, str]:
    meta = {u["id"]: u for u in results["utterances"]}
    figures = {}
    for system in results["systems"]:
        rows = [r for r in results["rows"].get(system["name"], []) if r.get("tokens_per_second") is not None]
        if not rows:
            continue
        by_language: dict[str, list[float]] = {}
        for row in rows:
            by_language.setdefault(meta[row["id"]].get("language") or "?", []).append(
                row["tokens_per_second"]
            )
        figure, axis = plt.subplots(figsize=(8, 4.5))
        values = [v for vs in by_language.values() for v in vs]
        bins = np.linspace(min(values) - 0.5, max(values) + 0.5, 30)
        for language, rates in sorted(by_language.items()):
            axis.hist(
                rates,
                bins=bins,
                histtype="step",
                linewidth=1.5,
                label=f"{language} (mean {np.mean(rates):.1f})",
            )
        axis.set_xlabel("tokens/s per utterance")
        axis.set_ylabel("utterances")
        axis.set_title(f"Token rate per language: {system['name']}")
        axis.legend(fontsize=8)
        name = f"token_rate_{system['name']}.png"
        _save(figure, out / name)
        plt.close(figure)
        figures[f"token rate per language ({system['name']})"] = name
    return figures


def _log_spectrogram(wav: np.ndarray, n_fft: int = 512, hop: int = 128) -> np.ndarray:
    if len(wav) < n_fft:
        wav = np.pad(wav, (0, n_fft - len(wav)))
    frames = np.lib.stride_tricks.sliding_window_view(wav, n_fft)[::hop] * np.hanning(n_fft)
    return 20.0 * np.log10(np.abs(np.fft.rfft(frames, axis=1)).T + 1e-5)


def _plot_spectrograms(plt: Any, results: dict[str, Any], out: Path, path: Path) -> bool:
    import soundfile as sf

    systems = [s["name"] for s in results["systems"]]
    preferred = [s["name"] for s in results["systems"] if s.get("kind") == "model"]
    preferred += [n for n in systems if n not in ("identity",)] + systems
    reference_dir = out / "audio" / "reference"
    if not preferred or not reference_dir.is_dir():
        return False
    system = preferred[0]
    from plutok.evaluation.runner import _safe_name

    pairs = []
    for utt in results["utterances"]:
        ref = reference_dir / f"{_safe_name(utt['id'])}.wav"
        dec = out / "audio" / _safe_name(system) / f"{_safe_name(utt['id'])}.wav"
        if ref.exists() and dec.exists():
            pairs.append((utt["id"], ref, dec))
        if len(pairs) == 3:
            break
    if not pairs:
        return False
    figure, axes = plt.subplots(len(pairs), 2, figsize=(12, 2.6 * len(pairs)), squeeze=False)
    for row, (utt_id, ref, dec) in enumerate(pairs):
        for column, (label, file) in enumerate((("reference", ref), (system, dec))):
            wav, rate = sf.read(str(file), dtype="float32")
            spectrogram = _log_spectrogram(wav)
            axis = axes[row][column]
            axis.imshow(
                spectrogram,
                origin="lower",
                aspect="auto",
                cmap="magma",
                vmin=spectrogram.max() - 80,
                extent=(0, len(wav) / rate, 0, rate / 2000),
            )
            axis.set_title(f"{utt_id}: {label}", fontsize=9)
            axis.set_ylabel("kHz")
    axes[-1][0].set_xlabel("s")
    axes[-1][1].set_xlabel("s")
    figure.tight_layout()
    _save(figure, path)
    plt.close(figure)
    return True


def write_report(results: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write ``results.json`` first (so nothing is lost), then the PNGs and ``report.md``.

    Returns:
        ``{"json": ..., "markdown": ..., <figure name>: ...}`` paths written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {"json": out / "results.json"}
    atomic_write_text(
        written["json"], json.dumps(results, indent=1, ensure_ascii=False, allow_nan=False) + "\n"
    )
    matplotlib = require("matplotlib", "the evaluation report figures")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures: dict[str, str] = {}
    if _plot_quality(plt, results, out / "quality_vs_bitrate.png"):
        figures["quality vs bitrate"] = "quality_vs_bitrate.png"
    figures.update(_plot_token_rates(plt, results, out))
    if _plot_spectrograms(plt, results, out, out / "spectrograms.png"):
        figures["spectrograms (reference | decoded)"] = "spectrograms.png"
    for name in figures.values():
        written[name] = out / name
    written["markdown"] = out / "report.md"
    atomic_write_text(written["markdown"], markdown_report(results, figures))
    return written
