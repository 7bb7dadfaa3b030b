"""Evaluation of Plutok and classical codecs: token rate, bitrate, WER/CER, STOI, PESQ, speaker similarity.

Modules: :mod:`~plutok.evaluation.metrics` (scores), :mod:`~plutok.evaluation.asr`
(Whisper base transcripts), :mod:`~plutok.evaluation.baselines` (systems),
:mod:`~plutok.evaluation.runner` (scoring loop, aggregation),
:mod:`~plutok.evaluation.report` (JSON, Markdown, figures), :mod:`~plutok.evaluation.cli`.
Heavy optional packages (``pip install plutok[eval]``) load only when a metric needs them.
"""

from __future__ import annotations

__all__ = ["evaluate", "aggregate", "load_dataset", "write_report"]


def __getattr__(name: str):
    if name in ("evaluate", "aggregate", "load_dataset"):
        from plutok.evaluation import runner

        return getattr(runner, name)
    if name == "write_report":
        from plutok.evaluation.report import write_report

        return write_report
    raise AttributeError(name)
