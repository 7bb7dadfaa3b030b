"""Hostile inputs: tiny files and configs that ask for huge sizes are refused before allocating.

The probes that could allocate much run the CLI (or a few lines of the API) in a
subprocess whose address space is capped at :data:`MEMORY_LIMIT` (``RLIMIT_AS``), so an
allocation bomb makes the test fail with a MemoryError instead of taking the machine
down; such a probe passes when the process ends with one ``error`` line naming the
problem and no traceback. The others run in pytest's process, under the same cap on
what they may add.
"""

from __future__ import annotations

import json
import os
import resource
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src"
# Enough for Python, torch and a tiny model (about 0.7 GB of address space), far below
# what any of the probes below asked for before they were refused.
MEMORY_LIMIT = 3 * 1024**3


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _address_space() -> int | None:
    """Bytes of address space this process uses now (Linux), None where unknown."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    except (OSError, StopIteration):
        return None


@pytest.fixture(autouse=True)
def memory_limit():
    """The probes that run inside pytest get at most MEMORY_LIMIT more address space too."""
    used = _address_space()
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if used is None:
        yield
        return
    limit = used + MEMORY_LIMIT if hard == resource.RLIM_INFINITY else min(hard, used + MEMORY_LIMIT)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def run_limited(arguments: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``python <arguments>`` with ``plutok`` from this checkout, under :data:`MEMORY_LIMIT`."""
    environment = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(SOURCE), os.environ.get("PYTHONPATH", "")])
    )
    environment.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, *arguments],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        preexec_fn=_limit_memory,
        timeout=600,  # a guard against a hang, not a speed assertion
    )


def cli(arguments: list[object], cwd: Path) -> subprocess.CompletedProcess:
    return run_limited(["-m", "plutok", *(str(argument) for argument in arguments)], cwd)


def python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_limited(["-c", textwrap.dedent(code)], cwd)


def assert_refused(result: subprocess.CompletedProcess, message: str) -> None:
    """The process failed with one error line containing ``message``, without a traceback."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines and "error" in lines[-1] and message in lines[-1], result.stderr


# -- crafted audio headers ---------------------------------------------------------------------


def wav_with_rate(path: Path, samples: np.ndarray, rate: int) -> Path:
    """A valid 16-bit mono WAV of ``samples`` whose header declares ``rate`` Hz (any rate, even 1)."""
    data = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    header = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt "
    header += struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
    path.write_bytes(header + b"data" + struct.pack("<I", len(data)) + data)
    return path


@pytest.mark.parametrize("rate", [1, 3, 3999, 384_001, 2**31 - 1])
def test_wav_declaring_an_absurd_rate_is_refused(tiny_model_dir, tmp_path, rate, speech_like):
    # 86 KB at 1 Hz was 12 h of audio to resample: 4.6 GB, then a MemoryError.
    path = wav_with_rate(tmp_path / "in.wav", speech_like(2.7), rate)
    result = cli(["encode", path, "-o", tmp_path / "out.plt", "--model", tiny_model_dir], tmp_path)
    assert_refused(result, "must be in 4000..384000 Hz")
    assert not (tmp_path / "out.plt").exists()


def test_lowest_accepted_rate_still_encodes(tiny_model, tmp_path, speech_like):
    from plutok.audio import MIN_INPUT_RATE

    path = wav_with_rate(tmp_path / "in.wav", speech_like(0.5, sample_rate=MIN_INPUT_RATE), MIN_INPUT_RATE)
    assert tiny_model.encode_file(path).sample_rate == MIN_INPUT_RATE


@pytest.mark.parametrize("rate", [True, False, 16000.0, "16000", None, 1, 0, -16000, 10**9])
def test_api_sample_rate_must_be_an_int_in_range(tiny_model, rate):
    from plutok.errors import AudioError

    with pytest.raises(AudioError, match="sample rate must be"):
        tiny_model.encode(np.zeros(16000, np.float32), rate)


def test_api_refuses_over_24_hours_before_resampling(tmp_path):
    # 24 h and a bit at 4 kHz is 1.4 GB of int16 samples only when materialised: a strided
    # view of one sample stands for it, so only a resampling attempt would allocate.
    result = python(
        """
        import numpy as np
        from plutok.audio import prepare_waveform
        from plutok.errors import PlutokError
        wav = np.lib.stride_tricks.as_strided(np.zeros(1, np.int16), (24 * 3600 * 4000 + 4000,), (0,))
        try:
            prepare_waveform(wav, 4000, 44100)
        except PlutokError as error:
            raise SystemExit(f"error: {error}")
        """,
        tmp_path,
    )
    assert_refused(result, "audio is too long: 24.0 h of audio")


def test_decode_refuses_a_bool_sample_rate(tiny_model):
    from plutok.errors import TokenError

    encoding = tiny_model.encode(np.zeros(16000, np.float32), 16000)
    encoding.sample_rate = True
    with pytest.raises(TokenError, match="bad sample rate True"):
        tiny_model.decode(encoding)


# -- --ids files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("word", ["1_000", "\u0661\u0662", "\uff11", "+5", "-1", "0x1f", "12345678901"])
def test_ids_are_ascii_digits_only(tmp_path, word):
    # int() takes all of these; a token id written as text is 0-9 only.
    from plutok.cli.decode import read_ids
    from plutok.errors import TokenError

    (tmp_path / "ids.txt").write_text(f"1 2 {word} 3", encoding="utf-8")
    with pytest.raises(TokenError, match="is not a token id"):
        read_ids(str(tmp_path / "ids.txt"))


@pytest.mark.parametrize(
    "text, message",
    [("[" + "9" * 5000 + "]", "not a JSON list of token ids"), ("[" * 100_000 + "]" * 100_000, "not a")],
)
def test_hostile_json_ids_are_one_line(tiny_model_dir, tmp_path, text, message):
    (tmp_path / "ids.json").write_text(text)
    result = cli(["decode", "--ids", tmp_path / "ids.json", "--model", tiny_model_dir], tmp_path)
    assert_refused(result, message)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["text", "json"])
def test_too_many_ids_are_refused_while_reading(tiny_model_dir, tmp_path, kind):
    from plutok.encoding import MAX_TOKEN_IDS

    count = MAX_TOKEN_IDS + 1
    body = ("0 " * count) if kind == "text" else "[" + "0," * (count - 1) + "0]"
    (tmp_path / "ids.txt").write_text(body)
    result = cli(["decode", "--ids", tmp_path / "ids.txt", "--model", tiny_model_dir], tmp_path)
    assert_refused(result, f"{MAX_TOKEN_IDS}")
    assert not (tmp_path / "ids.decoded.wav").exists()


@pytest.mark.slow
def test_ids_file_too_large_is_not_read_whole(tiny_model_dir, tmp_path):
    from plutok.encoding import MAX_TOKEN_IDS

    with (tmp_path / "ids.txt").open("w") as handle:  # a sparse file past the bound: spaces
        handle.write(" " * 16)
        handle.truncate(MAX_TOKEN_IDS * 13 + (1 << 20))
    result = cli(["decode", "--ids", tmp_path / "ids.txt", "--model", tiny_model_dir], tmp_path)
    assert_refused(result, "too large for a list of token ids")


# -- Parquet and JSONL cells -------------------------------------------------------------------


def good_row(**changes) -> dict:
    row = {
        "path": "a.wav",
        "duration": 1.0,
        "sample_rate": 16000,
        "num_samples": 16000,
        "num_codes": 25,
        "token_ids": [1, 2, 3],
        "speaker": [0.0] * 4,
        "fingerprint": "0" * 64,
    }
    row.update(changes)
    return row


def write_parquet(path: Path, row: dict, token_ids=None) -> Path:
    """A one-row token shard of ``row``; ``token_ids`` (an Arrow array) replaces that column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from plutok.io.shards import _schema

    schema = _schema(pa)
    columns = [pa.array([row[field.name]], field.type) for field in schema]
    if token_ids is not None:
        columns[schema.get_field_index("token_ids")] = token_ids
    pq.write_table(pa.Table.from_arrays(columns, schema=schema), str(path))
    return path


@pytest.mark.slow
def test_parquet_row_of_50_million_ids_is_refused_from_metadata(tmp_path):
    # 3 KB on disk (zeros compress), 5.6 GB and 65 s before it was refused.
    import pyarrow as pa

    count = 50_000_000
    ids = pa.ListArray.from_arrays(pa.array([0, count], pa.int32()), pa.nulls(count, pa.int32()).fill_null(0))
    path = write_parquet(tmp_path / "bomb.parquet", good_row(), ids)
    assert path.stat().st_size < 1_000_000
    result = python(
        f"""
        from plutok.errors import PlutokError
        from plutok.io.shards import find_row
        try:
            find_row({str(path)!r}, row=0)
        except PlutokError as error:
            raise SystemExit(f"error: {{error}}")
        """,
        tmp_path,
    )
    assert_refused(result, "50000000 token_ids values in 1 row(s); at most")


@pytest.mark.slow
def test_parquet_long_row_among_short_ones_is_refused_before_lists(tmp_path):
    import pyarrow as pa

    from plutok.encoding import MAX_TOKEN_IDS
    from plutok.errors import PlutokError
    from plutok.io.shards import find_row

    # 20 rows: the mean is within the bound, one row is not; the offsets tell before to_pylist.
    lengths = [0] * 19 + [MAX_TOKEN_IDS + 1]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    ids = pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.zeros(offsets[-1], np.int32)))
    import pyarrow.parquet as pq

    from plutok.io.shards import _schema

    schema = _schema(pa)
    columns = [pa.array([good_row()[field.name]] * 20, field.type) for field in schema]
    columns[schema.get_field_index("token_ids")] = ids
    pq.write_table(pa.Table.from_arrays(columns, schema=schema), str(tmp_path / "skewed.parquet"))
    with pytest.raises(PlutokError, match=f"a row has {MAX_TOKEN_IDS + 1} token_ids values"):
        find_row(tmp_path / "skewed.parquet", row=19)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"token_ids": None}, "not numbers"),
        ({"token_ids": ["1"]}, "not integers"),
        ({"fingerprint": None}, "must be strings"),
        ({"fingerprint": 7}, "must be strings"),
        ({"sample_rate": "16000"}, "bad sample_rate"),
        ({"sample_rate": True}, "bad sample_rate"),
        ({"speaker": "abc"}, "not numbers"),
        ({"num_samples": None}, "bad num_samples"),
    ],
)
def test_jsonl_cells_of_the_wrong_type_are_one_line(tmp_path, changes, message):
    from plutok.errors import PlutokError
    from plutok.io.shards import find_row

    (tmp_path / "t.jsonl").write_text(json.dumps(good_row(**changes)) + "\n")
    with pytest.raises(PlutokError, match=message):
        find_row(tmp_path / "t.jsonl", row=0)


@pytest.mark.parametrize(
    "changes, message",
    [({"token_ids": None}, "not numbers"), ({"fingerprint": None}, "must be strings")],
)
def test_parquet_null_cells_are_one_line(tmp_path, changes, message):
    from plutok.errors import PlutokError
    from plutok.io.shards import find_row

    path = write_parquet(tmp_path / "t.parquet", good_row(**changes))
    with pytest.raises(PlutokError, match=message):
        find_row(path, row=0)


def jsonl_with_ids(path: Path, count: int) -> Path:
    """A one-row JSONL token shard with ``count`` zero ids (written without a Python list of them)."""
    line = json.dumps(good_row(token_ids=[]))
    path.write_text(line.replace('"token_ids": []', '"token_ids": [' + "0," * (count - 1) + "0]") + "\n")
    return path


@pytest.mark.slow
def test_jsonl_row_of_too_many_ids_is_refused_before_parsing(tiny_model_dir, tmp_path):
    from plutok.io.shards import _MAX_JSONL_COMMAS

    path = jsonl_with_ids(tmp_path / "t.jsonl", _MAX_JSONL_COMMAS + 2)
    result = cli(["decode", path, "--row", 0, "--model", tiny_model_dir], tmp_path)
    assert_refused(result, "row too long")


@pytest.mark.slow
def test_jsonl_row_one_id_past_the_bound_is_refused(tmp_path):
    from plutok.encoding import MAX_TOKEN_IDS
    from plutok.errors import PlutokError
    from plutok.io.shards import find_row

    path = jsonl_with_ids(tmp_path / "t.jsonl", MAX_TOKEN_IDS + 1)
    with pytest.raises(PlutokError, match=f"{MAX_TOKEN_IDS + 1} token ids; at most {MAX_TOKEN_IDS}"):
        find_row(path, row=0)


@pytest.mark.parametrize("text", ['{"token_ids": [' + "9" * 5000 + "]}", "[" * 100_000])
def test_jsonl_hostile_numbers_and_nesting_are_one_line(tmp_path, text):
    from plutok.errors import PlutokError
    from plutok.io.shards import find_row

    (tmp_path / "t.jsonl").write_text(text + "\n")
    with pytest.raises(PlutokError, match="t.jsonl:1: not"):
        find_row(tmp_path / "t.jsonl", row=0)


# -- model configs -------------------------------------------------------------------------------


def build_limited(kind: str, config: dict, cwd: Path) -> subprocess.CompletedProcess:
    """``registry.build(kind, config)`` in a memory-limited process; a PlutokError ends as one line."""
    return python(
        f"""
        import json
        from plutok import registry
        from plutok.errors import PlutokError
        try:
            registry.build({kind!r}, json.loads({json.dumps(config)!r}))
        except PlutokError as error:
            raise SystemExit(f"error: {{error}}")
        """,
        cwd,
    )


CONTENT = {"name": "content", "channels": 16, "encoder_blocks": 1, "decoder_blocks": 1}
CONTENT["quantizer"] = {"name": "vq", "codebook_size": 16, "dim": 4}


@pytest.mark.parametrize(
    "kind, config, message",
    [
        (
            "codec",
            {**CONTENT, "quantizer": {"name": "vq", "codebook_size": 10**8, "dim": 4}},
            "codebook_size",
        ),
        (
            "codec",
            {**CONTENT, "quantizer": {"name": "vq", "codebook_size": 10**12, "dim": 1}},
            "codebook_size",
        ),
        (
            "codec",
            {**CONTENT, "quantizer": {"name": "vq", "codebook_size": 2**20, "dim": 512}},
            "a codebook of",
        ),
        ("codec", {**CONTENT, "quantizer": {"name": "fsq", "levels": [10**4] * 3}}, "FSQ levels make"),
        ("codec", {**CONTENT, "quantizer": {"name": "vq", "codebook_size": 16, "dim": 4, "x": 1}}, "bad VQ"),
        ("codec", {**CONTENT, "encoder_blocks": 10**6}, "encoder_blocks must be an integer in 0..64"),
        ("codec", {**CONTENT, "kernel_size": 10**9 + 1}, "kernel_size must be an integer in 1..255"),
        pytest.param(
            "codec", {**CONTENT, "channels": 8192, "kernel_size": 255}, "parameters", marks=pytest.mark.slow
        ),
        ("codec", {**CONTENT, "input_dim": True}, "input_dim must be an integer"),
        ("codec", {"name": "vqvae", "feature_dim": 80, "codebook_size": 10**12}, "codebook_size"),
        ("codec", {"name": "vqvae", "feature_dim": 10**9, "codebook_size": 16}, "feature_dim"),
        ("vocoder", {"name": "istft-16k", "n_fft": 10**9, "hop_length": 160}, "n_fft must be an integer"),
        ("vocoder", {"name": "istft-16k", "blocks": 10**6}, "blocks must be an integer in 0..64"),
        ("vocoder", {"name": "istft-16k", "sample_rate": 0}, "sample_rate must be an integer in 4000"),
        ("frontend", {"name": "log-mel", "n_fft": 10**9, "win_length": 640}, "n_fft must be an integer"),
        ("frontend", {"name": "log-mel", "n_mels": 10**7}, "n_mels must be an integer"),
        ("speaker", {"name": "mel-statistics", "sample_rate": 0}, "sample_rate must be an integer in 4000"),
        ("speaker", {"name": "mel-statistics", "coefficients": "x"}, "coefficients must be an integer"),
        ("frontend", {"name": "whisper-encoder", "pool": 10**9}, "pool must be an integer in 1..64"),
    ],
)
def test_absurd_model_config_sizes_are_refused_before_building(tmp_path, kind, config, message):
    assert_refused(build_limited(kind, config, tmp_path), message)


def test_model_directory_with_rate_zero_is_refused(tiny_model_dir, tmp_path, speech_wav):
    # (a v1 directory: its mel backbone is frontend and speaker at once)
    import shutil

    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    config = json.loads((model / "config.json").read_text())
    config["backbone"]["sample_rate"] = 0
    (model / "config.json").write_text(json.dumps(config))
    result = cli(["encode", speech_wav, "-o", tmp_path / "x.plt", "--model", model], tmp_path)
    assert_refused(result, "sample_rate must be an integer in 4000..384000, got 0")


def test_tokenizer_id_of_2_to_the_31_is_refused(tiny_model_dir, tmp_path, speech_wav):
    import shutil

    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    tokenizer = json.loads((model / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab[max(vocab, key=vocab.get)] = 2**31
    (model / "tokenizer.json").write_text(json.dumps(tokenizer))
    result = cli(["encode", speech_wav, "-o", tmp_path / "x.plt", "--model", model], tmp_path)
    assert_refused(result, "tokenizer has token id 2147483648")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"filter_length": 10**9 + 256, "win_length": 1024}, "filter_length must be in"),
        ({"upsample_initial_channel": 2**40}, "upsample_initial_channel must be in"),
        ({"resblock_kernel_sizes": [10**9 + 1] * 3}, "kernel sizes"),
        ({"sampling_rate": 0}, "sampling_rate must be in"),
    ],
)
def test_absurd_openvoice_backbone_sizes_are_refused(changes, message):
    from plutok.legacy.backbones.openvoice_modules import ConverterConfig

    with pytest.raises(ValueError, match=message):
        ConverterConfig.from_dict({**ConverterConfig().to_dict(), **changes})
