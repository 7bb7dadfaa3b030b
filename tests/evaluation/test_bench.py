"""plutok bench on a fake target with tiny inputs."""

from __future__ import annotations

import json

import numpy as np

from plutok import bench


def test_speech_like_is_deterministic_and_bounded():
    a = bench.speech_like(2.0, 16000, seed=1)
    assert a.shape == (32000,) and a.dtype == np.float32
    np.testing.assert_array_equal(a, bench.speech_like(2.0, 16000, seed=1))
    assert 0.05 < np.abs(a).max() <= 0.31


def test_benchmark_fake_target(fake_tokenizer):
    target = bench.BenchTarget.from_tokenizer(fake_tokenizer, "fake")
    result = bench.benchmark(target, [0.5, 1.0], batch_clips=2, batch_seconds=0.5, progress=False)
    assert [row["seconds"] for row in result["rtf"]] == [0.5, 1.0]
    assert all(row["encode_rtf"] >= 0 and row["peak_rss_mb"] > 0 for row in result["rtf"])
    assert result["batch"]["audio_hours_per_compute_hour"] > 0
    assert result["bpe"]["lossless"] and result["bpe"]["codes"] >= 200_000
    assert result["machine"]["torch"]
    table = bench.markdown_table(result)
    assert "| 0.5 |" in table and "h of audio per hour of compute" in table
    json.dumps(result)


def test_bench_cli_rejects_bad_durations(capsys):
    assert bench.main(["--durations", "ten", "--copy-synthesis"]) == 1
    assert "--durations" in capsys.readouterr().err


def test_decode_profile_splits_the_decode_by_stage(tiny_model):
    target = bench.BenchTarget.from_tokenizer(tiny_model, "tiny")
    result = bench.benchmark(target, [0.5], batch_clips=1, batch_seconds=0.5, progress=False)
    profile = result["decode_profile"]
    assert set(profile) == {"seconds", "bpe_s", "codec_decoder_s", "vocoder_s", "resample_to_48000_s"}
    assert all(value >= 0 for value in profile.values())
    assert "Decode profile (0.5 s of audio): bpe" in bench.markdown_table(result)


def test_vocoder_comparison_times_each_vocoder_on_the_same_codes(tiny_model):
    from plutok.vocoders.istft import ISTFTVocoder, ISTFTVocoderSettings

    other = ISTFTVocoder(ISTFTVocoderSettings(channels=8, blocks=1, expansion=2))
    target = bench.BenchTarget.from_tokenizer(tiny_model, "tiny")
    result = bench.benchmark(
        target,
        [0.5],
        batch_clips=0,
        progress=False,
        compare=lambda encoding: bench.compare_vocoders(tiny_model, encoding, {"small": other}, repeats=1),
    )
    rows = result["vocoder_comparison"]["decode"]
    assert list(rows) == [tiny_model.vocoder.name, "small"]
    for row in rows.values():
        assert row["decode_s"] == row["codec_decoder_s"] + row["vocoder_s"] > 0
    assert "Decode of the same 0.5 s of codes, best of 1: " in bench.markdown_table(result)
