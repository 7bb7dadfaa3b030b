"""Paired per-clip differences between two evaluated systems."""

from __future__ import annotations

import json
import math

import pytest

from plutok.evaluation import paired


def _results():
    utterances = [{"id": f"u{i}", "source": "a" if i < 2 else "b"} for i in range(4)]

    def row(i, stoi, errors):
        return {"id": f"u{i}", "stoi": stoi, "speaker_similarity": 0.5, "word_errors": errors, "words": 10}

    return {
        "utterances": utterances,
        "rows": {
            "old": [row(0, 0.5, 4), row(1, 0.6, 2), row(2, 0.7, 3), row(3, 0.8, 1)],
            "new": [row(0, 0.6, 3), row(1, 0.8, 2), row(2, 0.7, 1), row(3, 0.9, 1)],
        },
    }


def test_differences_are_per_clip_with_standard_errors():
    rows = {
        (r.group, r.metric): r
        for r in paired.paired_differences(_results(), "old", _results(), "new", "source")
    }
    stoi = rows[("all", "stoi")]
    assert stoi.clips == 4 and stoi.difference == pytest.approx(0.1)
    deltas = [0.1, 0.2, 0.0, 0.1]
    expected_se = math.sqrt(sum((d - 0.1) ** 2 for d in deltas) / 3 / 4)
    assert stoi.standard_error == pytest.approx(expected_se)
    wer = rows[("all", "wer")]
    # 10 -> 7 errors in 40 words: -7.5 WER points; per-clip deltas -1, 0, -2, 0.
    assert (wer.system_a, wer.system_b, wer.difference) == pytest.approx((25.0, 17.5, -7.5))
    deviations = [-1 + 0.75, 0 + 0.75, -2 + 0.75, 0 + 0.75]
    assert wer.standard_error == pytest.approx(
        100 * math.sqrt(sum(d**2 for d in deviations) / 3 / 4) * 4 / 40
    )
    assert rows[("a", "stoi")].difference == pytest.approx(0.15) and rows[("b", "wer")].clips == 2
    assert rows[("all", "speaker_similarity")].standard_errors == 0.0
    only_b = paired.paired_differences(_results(), "old", _results(), "new", where=("source", {"b"}))
    assert {(r.group, r.clips) for r in only_b} == {("all", 2)}
    assert paired.parse_where("source=a,b") == ("source", {"a", "b"})
    with pytest.raises(ValueError, match="FIELD=V1,V2"):
        paired.parse_where("source")


def test_cli_prints_a_table_and_refuses_unknown_systems(tmp_path, capsys):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_results()))
    assert paired.main([str(path), "old", "new"]) == 0
    assert "| all | stoi | 4 |" in capsys.readouterr().out
    assert paired.main([str(path), "old", "codec2-1200"]) == 2
    assert "no system 'codec2-1200'" in capsys.readouterr().err


def test_a_system_scored_without_the_asr_is_compared_on_what_it_has():
    # Copy-synthesis scored with --metrics stoi,speaker against a run with the ASR: no WER row.
    results = _results()
    results["rows"]["stoi-only"] = [
        {"id": row["id"], "stoi": row["stoi"] + 0.1, "speaker_similarity": 0.5}
        for row in results["rows"]["old"]
    ]
    rows = {r.metric: r for r in paired.paired_differences(results, "old", results, "stoi-only")}
    assert set(rows) == {"stoi", "speaker_similarity"} and rows["stoi"].difference == pytest.approx(0.1)
