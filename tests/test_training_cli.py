"""The v2 training commands as a user runs them: cache a folder, train-codec, assemble; their one-line errors."""

from __future__ import annotations

import json

import pytest
import soundfile as sf

from plutok.cli import main

# Cheap parts for tests: the log-mel frontend (no Whisper) and 4 speaker coefficients.
MEL_FRONTEND = json.dumps({"name": "log-mel", "normalize_by_speaker": True})
SPEAKER = json.dumps({"name": "mel-statistics", "coefficients": 4})
TINY_CODEC = [
    "--analysis-frames-per-code", "4", "--channels", "16", "--encoder-blocks", "1",
    "--decoder-blocks", "1", "--upsampled-channels", "8", "--upsampled-blocks", "1",
    "--content-channels", "8", "--quantizer", '{"name": "vq", "codebook_size": 16, "dim": 4}',
]  # fmt: skip
TINY_SCHEDULE = [
    "--steps", "3", "--batch-size", "2", "--segment-codes", "12", "--warmup-steps", "1",
    "--init-batches", "1", "--log-every", "1", "--eval-every", "3", "--checkpoint-every", "3",
]  # fmt: skip


def write_folder(root, speech_like, count: int, seconds: float = 1.5):
    folder = root / "corpus"
    for index in range(count):
        sub = folder / ("a" if index % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        sf.write(sub / f"clip{index}.flac", speech_like(seconds, seed=index), 16000)
    return folder


def cache_folder(folder, output) -> int:
    return main(
        ["cache", str(folder), "-o", str(output), "--frontend", MEL_FRONTEND, "--speaker", SPEAKER, "-q"]
    )


@pytest.fixture(scope="module")
def folder_cache(tmp_path_factory, speech_like):
    root = tmp_path_factory.mktemp("folder-cache")
    folder = write_folder(root, speech_like, 6)
    assert cache_folder(folder, root / "cache") == 0
    return root / "cache"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, folder_cache):
    run = tmp_path_factory.mktemp("run") / "run"
    assert main(["train-codec", str(folder_cache), "-o", str(run), *TINY_CODEC, *TINY_SCHEDULE]) == 0
    return run


def test_folder_rows_hold_out_a_deterministic_dev_split(tmp_path, speech_like):
    from plutok.training.cache import folder_rows

    folder = write_folder(tmp_path, speech_like, 2, seconds=0.3)
    rows = folder_rows(folder)
    assert sorted(row["split"] for row in rows) == ["dev", "train"]  # two files: one of them is dev
    assert folder_rows(folder) == rows
    for index in range(2000):
        (folder / f"f{index}.wav").write_bytes(b"")
    rows = folder_rows(folder)
    dev = sum(row["split"] == "dev" for row in rows)
    assert 60 < dev < 140  # ~5 % of 2,002 files
    (folder / "extra.wav").write_bytes(b"")
    after = {row["id"]: row["split"] for row in folder_rows(folder)}
    assert all(after[row["id"]] == row["split"] for row in rows)  # a new file moves no other
    single = tmp_path / "single"
    single.mkdir()
    sf.write(single / "only.wav", speech_like(0.3), 16000)
    assert [row["split"] for row in folder_rows(single)] == ["train"]


def test_cache_reads_a_folder_without_a_manifest(folder_cache, capsys):
    from plutok.training.cache import FeatureCache

    cache = FeatureCache(folder_cache)
    splits = sorted(u.split for u in cache.utterances())
    assert len(splits) == 6 and splits.count("dev") >= 1
    assert {u.id for u in cache.utterances()} == {f"{'a' if i % 2 else 'b'}/clip{i}" for i in range(6)}


def test_cache_says_it_chose_the_dev_split(tmp_path, speech_like, capsys):
    folder = write_folder(tmp_path, speech_like, 3, seconds=0.5)
    assert cache_folder(folder, tmp_path / "cache") == 0
    err = capsys.readouterr().err
    assert "a folder without a manifest: 2 train + 1 dev clips" in err


def test_a_manifest_without_split_is_one_line_error(tmp_path, speech_like, capsys):
    folder = write_folder(tmp_path, speech_like, 2, seconds=0.5)
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"path": f"corpus/b/clip{i}.flac"}) + "\n" for i in (0,)))
    assert cache_folder(manifest, tmp_path / "cache") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no row of split 'train' or 'dev' (1 without split)" in err
    assert not (tmp_path / "cache" / "index.jsonl").exists()
    manifest.write_text('{"file": "x.wav"}\n')
    assert cache_folder(manifest, tmp_path / "cache") == 1
    assert "manifest.jsonl:1: bad manifest row" in capsys.readouterr().err
    assert folder.is_dir()


def test_train_codec_without_train_clips_is_one_line_error(tmp_path, folder_cache, capsys):
    code = main(["train-codec", str(folder_cache), "-o", str(tmp_path / "run"), "--train-split", "nope"])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no cached clip of split 'nope' to train on" in err


def test_assemble_is_a_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["assemble", "--help"])
    assert exit_info.value.code == 0
    assert "usage: plutok assemble" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("vocab_size", "message"),
    [
        (16, "must be above the codebook size 16"),
        (10**9, "is above the limit 1,048,576"),
    ],
)
def test_impossible_vocabulary_sizes_are_one_line_errors(
    tmp_path, folder_cache, trained_run, vocab_size, message, capsys
):
    model = tmp_path / "model"
    code = main(
        [
            "assemble",
            str(folder_cache),
            str(trained_run / "codec"),
            "-o",
            str(model),
            "--vocab-size",
            str(vocab_size),
            "-q",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and message in err, err
    assert not model.exists()


def test_a_vocabulary_out_of_the_datas_reach_warns_with_the_size_reached(
    tmp_path, folder_cache, trained_run, capsys
):
    model = tmp_path / "model"
    code = main(
        [
            "assemble",
            str(folder_cache),
            str(trained_run / "codec"),
            "-o",
            str(model),
            "--vocab-size",
            "200",
            "-q",
        ]
    )
    captured = capsys.readouterr()
    reached = json.loads(captured.out.strip().splitlines()[-1])["vocab_size"]
    assert code == 0 and 16 < reached < 200
    assert f"plutok: warning: the BPE stopped at {reached} tokens of the 200 asked for" in captured.err
    assert json.loads((model / "config.json").read_text())["bpe"]["vocab_size"] == reached


def test_init_from_a_bundled_model_reads_its_architecture():
    from plutok.training.codec import ArchitectureConflict, starting_point

    start = starting_point("default", {"envelope_weight": 0.5, "decoder_blocks": 6})
    saved = json.loads((start.directory / "config.json").read_text())
    assert start.codec["channels"] == saved["codec"]["channels"] and start.codec["envelope_weight"] == 0.5
    assert start.codec["decoder_blocks"] == 6 and start.frontend["name"] == saved["frontend"]["name"]
    assert "weights_sha256" not in start.codec and "input_dim" not in start.codec
    assert starting_point("fast", {}).directory == start.directory  # the codec of fast is the default's
    grown = starting_point("default", {"quantizer": {"codebook_size": 1024}})
    assert grown.codec["quantizer"] == {**saved["codec"]["quantizer"], "codebook_size": 1024}
    for given in ({"channels": 128}, {"quantizer": {"dim": 8}}, {"decoder_blocks": 1}):
        with pytest.raises(ArchitectureConflict):
            starting_point("default", given)
    with pytest.raises(ArchitectureConflict, match="--frontend contradicts"):
        starting_point("default", {}, {"name": "log-mel"})
    # The same features at another precision are allowed: the codec is trained on to them.
    float32 = json.loads(json.dumps(saved["frontend"]))
    float32["members"][0]["compute_type"] = "float32"
    assert starting_point("default", {}, float32).frontend == start.frontend


def test_init_from_needs_no_architecture_flags_and_refuses_contradicting_ones(
    tmp_path, folder_cache, trained_run, capsys
):
    codec = str(trained_run / "codec")
    run = tmp_path / "again"
    assert main(["train-codec", str(folder_cache), "-o", str(run), "--init-from", codec, *TINY_SCHEDULE]) == 0
    saved = json.loads((trained_run / "codec" / "config.json").read_text())["codec"]
    assert json.loads((run / "codec" / "config.json").read_text())["codec"] == saved
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    logged = [row for row in lines if "step" in row]
    assert [row["step"] for row in logged] == [1, 2, 3]  # each progress line says how fast and how long
    assert all(row["steps_per_s"] > 0 for row in logged) and logged[-1]["eta"] == "0s"
    code = main(
        [
            "train-codec",
            str(folder_cache),
            "-o",
            str(tmp_path / "x"),
            "--init-from",
            codec,
            "--channels",
            "32",
        ]
    )
    assert code == 2 and "--channels 32 contradicts" in capsys.readouterr().err
    # The bundled model reads Whisper + log-mel with 16 speaker coefficients: this cache has 4.
    code = main(["train-codec", str(folder_cache), "-o", str(tmp_path / "y"), "--init-from", "default"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "cache again with --speaker" in err, err
    other = tmp_path / "cache16"
    speaker16 = json.dumps({"name": "mel-statistics", "coefficients": 16})
    clips = folder_cache.parent / "corpus"  # the audio behind folder_cache
    args = ["cache", str(clips), "-o", str(other), "--frontend", MEL_FRONTEND, "--speaker", speaker16, "-q"]
    assert main(args) == 0
    capsys.readouterr()
    code = main(["train-codec", str(other), "-o", str(tmp_path / "w"), "--init-from", "default"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "default reads stack features" in err, err
    assert "cache the audio again with plutok cache and its default --frontend" in err
    code = main(["train-codec", str(folder_cache), "-o", str(tmp_path / "z"), "--init-from", "no-such-model"])
    assert code == 1 and "no such folder, nor a bundled model (default," in capsys.readouterr().err


def test_time_left_reads_as_a_person_writes_it():
    from plutok.training.trainer import format_duration

    assert [format_duration(s) for s in (0, 44.6, 725, 11220, 90000)] == [
        "0s",
        "45s",
        "12m05s",
        "3h07m",
        "25h00m",
    ]


def test_train_vq_help_gives_the_default_step_count_and_time(capsys):
    from plutok.legacy.training import TrainConfig

    with pytest.raises(SystemExit):
        main(["train-vq", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"(default {TrainConfig.steps}: ~2 s a step" in help_text and "~11 h" in help_text


def test_the_old_assemble_module_runs_the_subcommand(monkeypatch, capsys):
    from plutok.training import assemble

    monkeypatch.setattr("sys.argv", ["assemble.py", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        assemble._main()
    assert exit_info.value.code == 0 and "usage: plutok assemble" in capsys.readouterr().out


def test_a_cache_with_nothing_in_it_is_an_error(tmp_path, speech_like, capsys):
    folder = write_folder(tmp_path, speech_like, 2, seconds=0.5)
    args = ["--frontend", MEL_FRONTEND, "--speaker", SPEAKER, "-q"]
    assert main(["cache", str(folder), "-o", str(tmp_path / "a"), "--splits", "test", *args]) == 1
    assert "no clip of split test to cache" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.wav").write_bytes(b"not audio")
    assert main(["cache", str(broken), "-o", str(tmp_path / "b"), *args]) == 1
    assert "no clip could be cached; the reasons are in" in capsys.readouterr().err
