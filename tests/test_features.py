"""Corpus extraction: sharded output, failures recorded, resumable, full pipeline through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from plutok.cli import main
from plutok.legacy.backbones import MelBackbone
from plutok.legacy.features import FeatureStore, extract_corpus, list_inputs, merge_failures


@pytest.fixture
def corpus(tmp_path, speech_like):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for index in range(5):
        sf.write(folder / f"good{index}.wav", speech_like(0.6 + 0.1 * index, seed=index), 16000)
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00garbage")
    sf.write(folder / "short.wav", np.zeros(50, np.float32), 16000)
    return folder


def test_extract_records_failures_and_resumes(corpus, tmp_path):
    utterances = list_inputs(corpus)
    assert [u.id for u in utterances][:2] == ["broken", "good0"]
    output = tmp_path / "features"
    backbone = MelBackbone()
    first = extract_corpus(utterances, backbone, output, shard_size=3, progress=False)
    assert (first.processed, first.failed, first.skipped) == (5, 2, 0)
    failures = merge_failures(output)
    assert sorted(row["id"] for row in failures) == ["broken", "short"]
    store = FeatureStore(output)
    assert store.complete and len(store) == 5
    rows = {row["id"]: (features, speaker) for row, features, speaker in store.iter_utterances()}
    assert sorted(rows) == [f"good{i}" for i in range(5)]
    features, speaker = rows["good2"]
    assert features.shape == (80, 80) and speaker.shape == (160,)
    again = extract_corpus(utterances, backbone, output, shard_size=3, progress=False)
    assert (again.processed, again.skipped) == (0, 7)


def test_killed_shard_is_redone(corpus, tmp_path):
    output = tmp_path / "features"
    utterances = list_inputs(corpus)
    extract_corpus(utterances, MelBackbone(), output, shard_size=3, progress=False)
    # A run killed while writing shard 1 leaves no index for it (the index is written last).
    (output / "shards" / "shard-00001.jsonl").unlink()
    assert not FeatureStore(output).complete
    summary = extract_corpus(utterances, MelBackbone(), output, shard_size=3, progress=False)
    assert summary.processed + summary.failed == 3 and summary.skipped == 4
    ids = [row["id"] for row in FeatureStore(output).index_rows()]
    assert sorted(ids) == [f"good{i}" for i in range(5)] and len(ids) == len(set(ids))


def test_manifest_input_with_split(tmp_path, corpus):
    manifest = tmp_path / "manifest.jsonl"
    rows = [
        {"id": "a", "path": str(corpus / "good0.wav"), "language": "en", "split": "train"},
        {"id": "b", "path": "corpus/good1.wav", "language": "cs", "split": "dev"},
    ]
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert [u.id for u in list_inputs(manifest, split="dev")] == ["b"]
    assert list_inputs(manifest)[1].language == "cs"


def test_settings_change_is_refused(corpus, tmp_path):
    from plutok.errors import PlutokError

    output = tmp_path / "features"
    extract_corpus(list_inputs(corpus), MelBackbone(), output, shard_size=3, progress=False)
    with pytest.raises(PlutokError, match="other settings"):
        extract_corpus(list_inputs(corpus), MelBackbone(), output, shard_size=4, progress=False)


@pytest.mark.slow
def test_pipeline_through_the_cli(corpus, tmp_path, capsys):
    features, vq, model = tmp_path / "features", tmp_path / "vq", tmp_path / "model"
    assert main(["extract", str(corpus), "-o", str(features), "-q", "--shard-size", "2"]) == 0
    assert (
        main(
            [
                "train-vq",
                str(features),
                "-o",
                str(vq),
                "-q",
                "--steps",
                "20",
                "--batch-size",
                "4",
                "--segment-frames",
                "32",
                "--codebook-size",
                "16",
                "--channels",
                "8",
            ]
        )
        == 0
    )
    assert json.loads((vq / "metrics.json").read_text())["step"] == 20
    assert (
        main(["train-bpe", str(features), "--vqvae", str(vq), "-o", str(model), "-q", "--vocab-size", "40"])
        == 0
    )
    capsys.readouterr()
    out = tmp_path / "out.wav"
    assert main(["roundtrip", str(corpus / "good3.wav"), "-o", str(out), "--model", str(model)]) == 0
    assert sf.info(out).frames == sf.info(corpus / "good3.wav").frames
