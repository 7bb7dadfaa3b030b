"""``extract`` and ``train-vq`` as 2-process torchrun (gloo) jobs: kill + resume, failures, equal replicas."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from plutok import distributed
from plutok.cli import main
from plutok.legacy.backbones import MelBackbone
from plutok.legacy.features import FeatureStore, extract_corpus, list_inputs

BROKEN = ["broken", "empty", "short"]
GOOD = [f"good{index}" for index in range(9)]
TRAIN_ARGS = [
    "--steps", "20", "--batch-size", "4", "--segment-frames", "32", "--codebook-size", "16",
    "--channels", "8", "--checkpoint-interval", "5", "--eval-interval", "10", "-q",
]  # fmt: skip


# Run by torchrun instead of ``-m plutok`` for a run that dies: the library's own hooks
# (``extract_corpus(on_shard=)``, ``train_vqvae(callback=)``) end the process as a kill would.
KILLER = """
import functools, os, sys
import plutok.legacy.features, plutok.legacy.training
from plutok.cli import main

hook, after = sys.argv.pop(1), int(sys.argv.pop(1))

def die(count, *_):
    if count >= after:
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(17)

if hook == "shards":
    plutok.legacy.features.extract_corpus = functools.partial(plutok.legacy.features.extract_corpus, on_shard=die)
else:
    plutok.legacy.training.train_vqvae = functools.partial(plutok.legacy.training.train_vqvae, callback=die)
sys.exit(main(sys.argv[1:]))
"""


def torchrun(*args: str, kill_after: tuple[str, int] | None = None) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone --nproc_per_node=2 -m plutok ARGS`` (free port, 1 thread).

    ``kill_after=("shards" | "steps", n)``: every rank dies (exit 17) after its n-th shard or step.
    """
    env = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    if kill_after is None:
        target = ["-m", "plutok"]
    else:
        script = Path(tempfile.mkdtemp()) / "killed_plutok.py"
        script.write_text(KILLER)
        target = [str(script), kill_after[0], str(kill_after[1])]
    return subprocess.run([*command, *target, *args], env=env, capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, speech_like) -> Path:
    """9 good utterances and 3 unusable ones (not audio, empty file, too short): 12 inputs."""
    folder = tmp_path_factory.mktemp("distributed") / "corpus"
    folder.mkdir()
    for index, name in enumerate(GOOD):
        sf.write(folder / f"{name}.wav", speech_like(0.5 + 0.05 * index, seed=index), 16000)
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00garbage")
    (folder / "empty.wav").write_bytes(b"")
    sf.write(folder / "short.wav", np.zeros(50, np.float32), 16000)
    return folder


@pytest.fixture(scope="module")
def features(corpus, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("features") / "features"
    extract_corpus(list_inputs(corpus), MelBackbone(), output, shard_size=2, progress=False)
    return output


@pytest.mark.slow
def test_killed_two_process_extraction_resumes_exactly_once(corpus, tmp_path):
    output = tmp_path / "features"
    killed = torchrun("extract", str(corpus), "-o", str(output), "--shard-size", "2", "-q",
                      kill_after=("shards", 1))  # fmt: skip
    assert killed.returncode != 0
    done_before = len(list((output / "shards").glob("shard-*.jsonl")))
    assert 1 <= done_before < 6  # each rank wrote one shard of its three, then died

    resumed = torchrun("extract", str(corpus), "-o", str(output), "--shard-size", "2", "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert "over 2 ranks" in resumed.stdout and "skipped" in resumed.stdout
    skipped = int(resumed.stdout.split("skipped ")[1].split()[0])
    assert skipped == 2 * done_before  # the finished shards were not redone

    store = FeatureStore(output)
    assert store.complete
    rows = list(store.index_rows(include_failed=True))
    ids = [row["id"] for row in rows]
    assert sorted(ids) == sorted(GOOD + BROKEN)  # every input exactly once: nothing lost, nothing twice
    assert sorted(row["id"] for row in rows if not row.get("failed")) == GOOD
    failures = [json.loads(line) for line in (output / "failures.jsonl").read_text().splitlines()]
    assert sorted(row["id"] for row in failures) == BROKEN
    assert not list((output / "shards").glob(".*.part"))  # leftovers of the killed run are cleaned up
    assert sorted(row["id"] for row, _, _ in store.iter_utterances()) == GOOD


@pytest.mark.slow
def test_two_ranks_and_local_workers_give_the_same_features(corpus, features, tmp_path):
    ranked = tmp_path / "ranked"
    run = torchrun("extract", str(corpus), "-o", str(ranked), "--shard-size", "2", "-q")
    assert run.returncode == 0, run.stderr
    assert "processed 9, skipped 0 (done before), failed 3" in run.stdout
    workers = tmp_path / "workers"
    assert (
        main(["extract", str(corpus), "-o", str(workers), "--shard-size", "2", "--workers", "2", "-q"]) == 0
    )
    expected = {row["id"]: (f, s) for row, f, s in FeatureStore(features).iter_utterances()}
    for output in (ranked, workers):
        got = {row["id"]: (f, s) for row, f, s in FeatureStore(output).iter_utterances()}
        assert sorted(got) == sorted(expected)
        for key, (feats, speaker) in expected.items():
            np.testing.assert_array_equal(got[key][0], feats)
            np.testing.assert_array_equal(got[key][1], speaker)


@pytest.mark.slow
def test_two_process_training_keeps_replicas_equal_and_resumes_exactly(features, tmp_path):
    from safetensors.numpy import load_file

    from plutok.legacy.training import evaluate
    from plutok.legacy.vqvae import VQVAE

    straight = tmp_path / "straight"
    run = torchrun("train-vq", str(features), "-o", str(straight), "--dev", str(features), *TRAIN_ARGS)
    assert run.returncode == 0, run.stderr
    metrics = json.loads((straight / "metrics.json").read_text())
    assert metrics["step"] == 20 and metrics["world_size"] == 2
    # Both ranks end with the same weights, codebook and codebook-maintenance state.
    assert len(metrics["state_digests"]) == 2 and len(set(metrics["state_digests"])) == 1
    # The held-out loss is over the whole dev set, though each rank evaluated half of it.
    model = VQVAE.load(straight)
    dev = FeatureStore(features).load_features()
    assert metrics["dev_loss"] == pytest.approx(
        evaluate(model, dev, torch.device("cpu"))["dev_loss"], rel=1e-5
    )

    resumed = tmp_path / "resumed"
    killed = torchrun("train-vq", str(features), "-o", str(resumed), *TRAIN_ARGS,
                      kill_after=("steps", 13))  # fmt: skip
    assert killed.returncode != 0
    newest = sorted((resumed / "checkpoints").glob("step-*.json"))[-1]
    assert json.loads(newest.read_text())["step"] == 10
    run = torchrun("train-vq", str(features), "-o", str(resumed), "--resume", *TRAIN_ARGS)
    assert run.returncode == 0, run.stderr
    history = json.loads((resumed / "metrics.json").read_text())["history"]
    assert history[0]["step"] == 20  # continued from step 10, did not start over
    expected = load_file(str(straight / "vqvae.safetensors"))
    got = load_file(str(resumed / "vqvae.safetensors"))
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


def test_helpers_are_identities_in_one_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    with distributed.process_group() as ctx:
        assert (ctx.rank, ctx.world_size, ctx.is_writer) == (0, 1, True)
        tensor = torch.arange(3.0)
        assert distributed.all_gather_cat(tensor) is tensor
        assert distributed.all_gather_objects({"a": 1}) == [{"a": 1}]
        assert torch.equal(distributed.all_reduce_sum(tensor.clone()), tensor)
        distributed.barrier()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert distributed.env_context().rank == 1
    monkeypatch.setenv("RANK", "2")
    from plutok.errors import PlutokError

    with pytest.raises(PlutokError, match="torchrun"):
        distributed.env_context()


def test_feature_parts_are_disjoint_and_complete(features):
    store = FeatureStore(features)
    parts = [[row["id"] for row, _, _ in store.iter_utterances(part=(i, 3))] for i in range(3)]
    assert sorted(sum(parts, [])) == GOOD
    assert all(parts)
    halves = store.load_features(dtype=np.float16)
    assert halves[0].dtype == np.float16


@pytest.mark.slow
@pytest.mark.parametrize(
    "terms",
    [
        (),
        ("--adversarial-weight", "1", "--adversarial-channels", "4", "--adversarial-warmup-steps", "2"),
        ("--speaker", '{"name": "learned-mel", "coefficients": 4, "std_coefficients": 2, "learned_dim": 2}'),
    ],
    ids=["plain", "adversarial", "learned-speaker"],
)
def test_two_process_codec_training_keeps_replicas_equal(tmp_path, small_cache, terms):
    clips = [
        {"seconds": 1.0 + 0.2 * i, "seed": 40 + i, "split": "dev" if i == 5 else "train"} for i in range(6)
    ]
    cache = small_cache(
        tmp_path,
        clips,
        # A learned speaker's statistics normalise what the codec reads: plain log-mel there.
        {"name": "log-mel", "normalize_by_speaker": "--speaker" not in terms},
        {"name": "mel-statistics", "coefficients": 4},
    )
    run = torchrun(
        "train-codec", str(cache), "-o", str(tmp_path / "run"), "--analysis-frames-per-code", "4",
        "--channels", "16", "--encoder-blocks", "1", "--decoder-blocks", "1", "--upsampled-channels", "8",
        "--upsampled-blocks", "1", "--content-channels", "8",
        "--quantizer", '{"name": "vq", "codebook_size": 16, "dim": 4, "dead_code_steps": 2}',
        "--steps", "6", "--batch-size", "2", "--segment-codes", "12", "--log-every", "2", "--eval-every", "3",
        "--checkpoint-every", "3", "--warmup-steps", "1", "--init-batches", "1", *terms,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    finals = [json.loads(line) for line in run.stdout.splitlines() if line.startswith('{"final"')]
    assert len(finals) == 1  # rank 0 alone reports and writes
    # Each rank drew its own crops, yet weights, codebook and upkeep state (and the
    # discriminator's weights and optimiser state, the speaker network's weights) are equal everywhere.
    assert finals[0]["final"]["replicas_equal"] == 1.0
    assert (tmp_path / "run" / "codec" / "config.json").is_file()


def test_exit_process_is_sys_exit_without_a_group_and_keeps_the_status():
    with pytest.raises(SystemExit) as stopped:
        distributed.exit_process(3)
    assert stopped.value.code == 3
    # ``python -m plutok`` ends through it: the CLI's exit status and output survive.
    env = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    bad = subprocess.run([sys.executable, "-m", "plutok", "decode", "/nonexistent.plt"], env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 1 and "plutok: error:" in bad.stderr
    version = subprocess.run([sys.executable, "-m", "plutok", "--version"], env=env,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert version.returncode == 0 and version.stdout.strip()
