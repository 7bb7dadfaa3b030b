"""End to end on a 2-utterance manifest: results.json, report.md and PNGs; resume; CLI."""

from __future__ import annotations

import json

import pytest

from plutok.evaluation import baselines, cli, runner


class CountingIdentity(baselines.IdentityBaseline):
    calls = 0

    def process(self, wav):
        CountingIdentity.calls += 1
        return super().process(wav)


class EchoTranscriber:
    def transcribe(self, wav, language):
        return "hello world" if language == "en" else "hello"


def test_manifest_loading(manifest):
    items = runner.load_manifest(manifest, split="dev")
    assert [u.id for u in items] == ["utt0", "utt1"]
    assert items[0].path.is_file() and items[1].kind == "synthetic"
    assert len(runner.load_manifest(manifest)) == 3
    assert len(runner.load_manifest(manifest, limit=1)) == 1


def test_report_files_and_resume(manifest, tmp_path, fake_tokenizer):
    pytest.importorskip("matplotlib")
    pytest.importorskip("pystoi")
    pytest.importorskip("jiwer")
    from plutok.evaluation.report import write_report

    out = tmp_path / "out"
    utterances = runner.load_dataset(manifest, split="dev")
    systems = [baselines.ModelSystem(fake_tokenizer, "fake"), CountingIdentity()]
    kwargs = dict(
        metrics=["stoi", "asr"],
        transcriber_factory=EchoTranscriber,
        asr_cache_path=tmp_path / "asr.json",
        progress=False,
    )
    evaluation = runner.evaluate(utterances, systems, out, **kwargs)
    assert CountingIdentity.calls == 2
    results = {"command": "test", "data": str(manifest), "versions": {}, **evaluation}
    results["aggregates"] = runner.aggregate(evaluation)
    written = write_report(results, out)
    for name in (
        "results.json",
        "report.md",
        "quality_vs_bitrate.png",
        "token_rate_fake.png",
        "spectrograms.png",
    ):
        assert (out / name).stat().st_size > 0, name
    loaded = json.loads((out / "results.json").read_text())
    identity = loaded["aggregates"]["identity"]
    assert identity["all"]["stoi"] == pytest.approx(1.0, abs=1e-6)
    assert identity["language"]["en"]["wer"] == 0.0  # "hello world" vs "Hello, world!"
    assert identity["all"]["wer"] == 0.25  # corpus level: 1 error in 4 reference words
    assert identity["language"]["cs"]["wer"] == 0.5 and set(identity["kind"]) == {"real", "synthetic"}
    fake = loaded["aggregates"]["fake"]["all"]
    assert fake["tokens_per_second"] == pytest.approx(25.0, rel=0.05)
    assert 0 <= fake["code_entropy_bits_per_second"] <= 4 * fake["codes_per_second"]
    assert "| identity |" in written["markdown"].read_text()
    # Rerun: everything is already in partial/, nothing is processed again.
    runner.evaluate(utterances, systems, out, **kwargs)
    assert CountingIdentity.calls == 2
    assert len(json.loads((tmp_path / "asr.json").read_text())) == 2


def test_cli_baseline_only(manifest, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    pytest.importorskip("pystoi")
    out = tmp_path / "cli-out"
    status = cli.main(
        [
            str(manifest),
            "--split",
            "dev",
            "--limit",
            "1",
            "--baselines",
            "identity",
            "--metrics",
            "stoi",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert status == 0
    assert json.loads((out / "results.json").read_text())["command"].startswith("plutok eval")
    assert "| identity |" in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert cli.main([str(tmp_path / "missing.jsonl"), "--baselines", "identity", "--quiet"]) == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"path": "a.wav"}\n')
    assert cli.main([str(bad), "--baselines", "identity", "--quiet"]) == 1
    assert cli.main([str(bad), "--baselines", "nope", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "no such manifest" in err and "missing field(s) language, text" in err and "Traceback" not in err


def test_untranscribed_utterances_are_scored_against_the_reference_transcript(manifest, tmp_path):
    pytest.importorskip("jiwer")
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    for row in rows:
        row["text"] = ""
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    utterances = runner.load_dataset(manifest, split="dev")

    class HearsLess(EchoTranscriber):
        calls = 0

        def transcribe(self, wav, language):
            HearsLess.calls += 1
            # The reference is transcribed first (2 calls), then the system's output.
            return super().transcribe(wav, language) if HearsLess.calls <= 2 else "hello"

    def run(name, transcriber, **options):
        return runner.evaluate(
            utterances,
            [CountingIdentity()],
            tmp_path / name,
            metrics=["asr"],
            progress=False,
            transcriber_factory=transcriber,
            asr_cache_path=tmp_path / f"{name}.json",
            **options,
        )

    skipped = run("skip", EchoTranscriber)
    assert all(row["words"] == 0 for row in skipped["rows"]["identity"])  # no transcript, no WER

    scored = run("dwer", HearsLess, text_from_reference=True)
    references = {row["id"]: row for row in scored["references"]}
    assert references["utt0"]["text_source"] == "reference-asr" and references["utt0"]["wer"] == 0.0
    en = next(row for row in scored["rows"]["identity"] if row["id"] == "utt0")
    assert (en["word_errors"], en["words"]) == (1, 2)  # "hello" against the heard "hello world"
    # Resumed, the reference transcript is taken from partial/ and still used as the text.
    resumed = run("dwer", HearsLess, text_from_reference=True)
    assert resumed["rows"]["identity"] == scored["rows"]["identity"]
