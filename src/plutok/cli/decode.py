"""``plutok decode``: speech from ``.plt`` files, from bare token ids, or from one row of a token corpus.

Every output is resolved and checked (format, collisions, never an input, no silent
overwrite) before the model is loaded, so a typo costs nothing.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plutok.cli.common import (
    ModelForFiles,
    UsageError,
    add_model_options,
    collect_inputs,
    folder_output,
    is_many,
    load_model,
    many_files_exit,
    my_share,
    non_negative_int,
    plural,
    positive_int,
    rank_prefix,
    resolve_for_rank,
    skipped,
    warn,
)

if TYPE_CHECKING:
    from plutok.api import Plutok
    from plutok.encoding import Encoding
    from plutok.io.shards import TokenRow

# plutok.io.outputs.OUTPUT_FORMATS, spelled out so that --help does not import numpy and soundfile
# (tests/test_cli_decode.py checks that they agree).
AUDIO_FORMATS = ("wav", "flac", "ogg", "mp3")
OUTPUT_EXTENSIONS = tuple(f".{name}" for name in AUDIO_FORMATS)
SHARD_SUFFIXES = (".parquet", ".jsonl")
STDIN = "-"
# A decode of at least this much audio shows a progress bar even when stderr is no terminal
# (a log): HiFi-GAN takes about as long as the audio lasts on two cores.
LONG_DECODE_SECONDS = 60.0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="*",
        metavar="IN",
        help=".plt file(s) or folder(s) of them (searched recursively); or one token corpus "
        "(.parquet, .jsonl or a folder of shards) with --row or --path",
    )
    source = parser.add_argument_group("other sources")
    source.add_argument(
        "--ids",
        metavar="FILE",
        help="decode bare token ids (e.g. from a language model): a JSON list or whitespace-separated "
        "integers; '-' reads them from stdin",
    )
    pick = source.add_mutually_exclusive_group()
    pick.add_argument(
        "--row",
        type=non_negative_int,
        metavar="N",
        help="decode row N (0-based, in shard order) of a token corpus",
    )
    pick.add_argument("--path", metavar="REL", help="decode the row of source file REL of a token corpus")
    voice = parser.add_argument_group("voice and output")
    voice.add_argument(
        "--speaker",
        metavar="REF",
        help="speak in this voice: a reference audio file or a .plt file (voice swap); default the "
        "encoding's own voice (for --ids: the model's default voice)",
    )
    voice.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="OUT.wav/.flac/.ogg/.mp3 for one input, or a folder (ends in '/' or exists) "
        "(default: IN.decoded.wav beside each input)",
    )
    voice.add_argument(
        "--format",
        choices=AUDIO_FORMATS,
        default=None,
        help="audio format of outputs not named by -o OUT.EXT (default wav)",
    )
    voice.add_argument(
        "--sample-rate",
        type=positive_int,
        default=None,
        metavar="HZ",
        help="output rate (default: the model's)",
    )
    voice.add_argument(
        "--stream",
        action="store_true",
        help="with --ids and -o -: write raw 16-bit little-endian mono PCM at the model's rate to stdout "
        "as each chunk is decoded (e.g. | aplay -f S16_LE -r 16000), before all audio is ready; with "
        "--ids -, whitespace-separated ids are decoded as they arrive (e.g. from a language model)",
    )
    voice.add_argument(
        "--chunk-codes",
        type=positive_int,
        default=None,
        metavar="N",
        help="with --stream: codes per audio chunk (default 25, 1 s); fewer start the audio sooner "
        "and cost more compute per second of audio",
    )
    voice.add_argument("--force", action="store_true", help="replace existing outputs you did not name")
    voice.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_model_options(parser)


# -- what to decode -------------------------------------------------------------------------------
# A token id written as text: ASCII digits only, at most ten (ids are int32).
_ASCII_ID = re.compile(r"[0-9]{1,10}")


def read_ids(source: str) -> list[int]:
    """Token ids from a file (or stdin for ``-``): a JSON list, a JSON object with ``token_ids``, or integers.

    Plain-text ids are ASCII digits only (``int()`` would also take ``1_000`` and other
    scripts' digits). At most ``MAX_TOKEN_IDS`` ids, checked while reading, not after.

    Raises:
        TokenError: nothing there, something that is not an integer, too many ids.
        PlutokError: the file cannot be read.
    """
    from plutok.encoding import MAX_TOKEN_IDS
    from plutok.errors import PlutokError, TokenError

    # No file of at most MAX_TOKEN_IDS ids is longer (ten digits and a separator each,
    # and room for JSON spacing); reading stops there instead of at the end of a huge file.
    max_bytes = MAX_TOKEN_IDS * 12 + (1 << 20)
    name = "stdin" if source == STDIN else source
    if source == STDIN:
        text = sys.stdin.read(max_bytes + 1)
    else:
        path = Path(source)
        if not path.is_file():
            raise PlutokError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
        try:
            with path.open(encoding="utf-8") as handle:
                text = handle.read(max_bytes + 1)
        except UnicodeDecodeError:
            raise TokenError(f"{path}: not a text file of token ids") from None
    if len(text) > max_bytes:
        raise TokenError(f"{name}: too large for a list of token ids (at most {MAX_TOKEN_IDS} ids)")
    return parse_ids(text, name)


def parse_ids(text: str, name: str) -> list[int]:
    """Token ids in ``text``: a JSON list, a JSON object with ``token_ids``, or separated integers."""
    from plutok.encoding import MAX_TOKEN_IDS
    from plutok.errors import TokenError

    stripped = text.strip()
    ids: list[int] = []
    if stripped.startswith(("[", "{")):
        try:
            value: Any = json.loads(stripped)
        except json.JSONDecodeError as error:
            raise TokenError(f"{name}: not valid JSON ({error.msg} at line {error.lineno})") from None
        except (ValueError, RecursionError) as error:  # 5,000-digit numbers, deep nesting
            raise TokenError(f"{name}: not a JSON list of token ids ({type(error).__name__})") from None
        if isinstance(value, dict):
            value = value.get("token_ids", value.get("ids"))
        if not isinstance(value, list):
            raise TokenError(f"{name}: expected a JSON list of token ids (or an object with token_ids)")
        for item in value:
            if isinstance(item, bool) or not isinstance(item, int):
                raise TokenError(f"{name}: token ids must be integers, got {json.dumps(item)[:40]}")
        ids = value
    else:
        for match in re.finditer(r"[^\s,]+", stripped):
            if len(ids) == MAX_TOKEN_IDS:
                raise TokenError(f"{name}: more than {MAX_TOKEN_IDS} token ids (24 h of audio)")
            ids.append(_integer_id(match.group(), name))
    if len(ids) > MAX_TOKEN_IDS:
        raise TokenError(f"{name}: {len(ids)} token ids; at most {MAX_TOKEN_IDS} (24 h of audio)")
    if not ids:
        raise TokenError(f"{name}: no token ids in it")
    return ids


def stream_ids(descriptor: int, name: str = "stdin") -> Iterator[int]:
    """Token ids from a file descriptor as they arrive: each id once the separator after it has come.

    Reads with :func:`os.read` (no buffering ahead), so a producer that writes an id and
    flushes gets it decoded without closing the pipe. Ids are separated by whitespace
    or commas; input that starts with ``[`` or ``{`` is JSON, read to the end first.
    Raises:
        TokenError: a word that is not an integer, or no ids at all.
    """
    from plutok.encoding import MAX_TOKEN_IDS
    from plutok.errors import TokenError

    max_json_bytes = MAX_TOKEN_IDS * 12 + (1 << 20)  # as read_ids: no list of allowed size is longer
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    count = 0
    while True:
        block = os.read(descriptor, 65536)
        ended = not block
        pending += decoder.decode(block, final=ended)
        if count == 0 and pending.lstrip().startswith(("[", "{")):
            while block:
                block = os.read(descriptor, 65536)
                pending += decoder.decode(block, final=not block)
                if len(pending) > max_json_bytes:
                    raise TokenError(
                        f"{name}: too large for a list of token ids (at most {MAX_TOKEN_IDS} ids)"
                    )
            yield from parse_ids(pending, name)
            return
        words = re.split(r"[\s,]+", pending)
        # The last word may go on in the next block, unless the input has ended.
        pending = "" if ended else words.pop()
        if len(pending) > 64:  # an id has at most ten digits; this is no id, and would grow without end
            raise TokenError(f"{name}: {pending[:20]!r}... is not a token id (ASCII digits 0-9)")
        for word in words:
            if word:
                count += 1
                if count > MAX_TOKEN_IDS:
                    raise TokenError(f"{name}: more than {MAX_TOKEN_IDS} token ids (24 h of audio)")
                yield _integer_id(word, name)
        if ended:
            break
    if count == 0:
        raise TokenError(f"{name}: no token ids in it")


def _integer_id(word: str, name: str) -> int:
    from plutok.errors import TokenError

    if not _ASCII_ID.fullmatch(word):
        shown = word if len(word) <= 20 else word[:20] + "..."
        raise TokenError(f"{name}: {shown!r} is not a token id (ASCII digits 0-9)")
    return int(word)


def row_encoding(tok: Plutok, row: TokenRow, source: str) -> Encoding:
    """The :class:`Encoding` of one token-corpus row, refused when a model of another token space made it."""
    import numpy as np

    from plutok.catalog import retired_model
    from plutok.encoding import Encoding
    from plutok.errors import ContainerError

    text = str(row.fingerprint).lower()
    retired = retired_model(text)
    if retired is not None and not tok.fingerprint.startswith(text[:16]):
        raise ContainerError(
            f"{source}: row {row.path} was made by {retired.describe()}, which this Plutok no longer "
            f"ships; {retired.where_to_decode()}"
        )
    try:
        fingerprint = bytes.fromhex(text[:16]) if len(text) >= 16 else b""
    except ValueError:
        fingerprint = b""
    if not tok.reads(fingerprint):
        raise ContainerError(
            f"{source}: row {row.path} was made by another model (fingerprint {text[:16]}, this "
            f"model's is {tok.token_space[:16]}); pass the model that made it with --model"
        )
    return Encoding(
        ids=list(row.token_ids),
        speaker=np.asarray(row.speaker, dtype=np.float32),
        sample_rate=int(row.sample_rate),
        num_samples=int(row.num_samples),
        num_codes=int(row.num_codes),
        fingerprint=fingerprint,
    )


# -- outputs --------------------------------------------------------------------------------------
def _extension(args: argparse.Namespace) -> str:
    """Extension of outputs the user does not name; ``--format`` must agree with a named ``-o``."""
    from plutok.io.outputs import is_folder_output

    if args.output and not is_folder_output(args.output) and args.format:
        named = Path(args.output).suffix.lower().lstrip(".")
        if named != args.format:
            raise UsageError(f"--format {args.format} contradicts -o {args.output}")
    return "." + (args.format or "wav")


def _pseudo_input(folder: Path, label: str) -> Path:
    # resolve_outputs names outputs after an input's stem; ``.src`` keeps dots in ``label``.
    return folder / f"{label}.src"


def _check_mode(args: argparse.Namespace) -> str:
    """``ids``, ``row`` or ``plt``, after refusing option combinations that make no sense."""
    picked = args.row is not None or args.path is not None
    if args.ids is not None:
        if args.inputs or picked:
            raise UsageError("--ids decodes token ids on their own: give no IN, --row or --path with it")
        return "ids"
    if picked:
        if len(args.inputs) != 1:
            raise UsageError("--row/--path pick a row of one token corpus: give exactly one IN")
        return "row"
    if not args.inputs:
        raise UsageError("give .plt file(s), --ids FILE, or a token corpus with --row N / --path REL")
    for argument in args.inputs:
        path = Path(argument)
        shards = path.is_dir() and any(
            item.suffix in SHARD_SUFFIXES and item.stem.startswith("tokens-") for item in path.iterdir()
        )
        if path.suffix.lower() in SHARD_SUFFIXES or shards:
            raise UsageError(f"{argument} is a token corpus: pick a row with --row N or --path REL")
    return "plt"


def _output_checker(args: argparse.Namespace) -> Callable[[Path], object]:
    """Checks an output's format, and that it can be written at ``--sample-rate``, before any work."""
    from plutok.io.outputs import check_output_format, check_output_rate

    def check(path: Path) -> None:
        check_output_format(path)
        if args.sample_rate is not None:
            check_output_rate(path, args.sample_rate)

    return check


def run(args: argparse.Namespace) -> int:
    from plutok.io.outputs import resolve_outputs

    mode = _check_mode(args)
    if args.stream:
        if mode != "ids" or args.output != "-" or args.sample_rate is not None:
            raise UsageError("--stream decodes --ids to stdout: give --ids FILE -o - (and no --sample-rate)")
        return _stream_ids(args)
    if args.chunk_codes is not None:
        raise UsageError("--chunk-codes sets the chunks of --stream: give it with --stream")
    extension = _extension(args)
    if args.sample_rate is not None and args.sample_rate > 384_000:
        raise UsageError(f"--sample-rate must be at most 384000 Hz, got {args.sample_rate}")
    # The voice reference is read like an input, so no output may replace it.
    protected = [args.speaker] if args.speaker is not None else []
    check = _output_checker(args)
    if mode == "ids":
        label = _pseudo_input(Path("."), "ids") if args.ids == STDIN else Path(args.ids)
        [output] = resolve_outputs(
            [label], args.output, ".decoded", extension, args.force, check_format=check, protected=protected
        )
        ids = read_ids(args.ids)
        return _decode_ids(args, ids, output)
    if mode == "row":
        corpus = Path(args.inputs[0])
        label = f"row{args.row}" if args.row is not None else Path(args.path).stem
        base = corpus.name[: -len(corpus.suffix)] if corpus.suffix else corpus.name
        pseudo = _pseudo_input(corpus.parent, f"{base}-{label}")
        [output] = resolve_outputs(
            [pseudo], args.output, ".decoded", extension, args.force, check_format=check, protected=protected
        )
        return _decode_row(args, corpus, output)
    files = collect_inputs(args.inputs, (".plt",), ".plt files")
    output = folder_output(args.output, args.inputs, OUTPUT_EXTENSIONS)
    outputs = resolve_for_rank(files, output, ".decoded", extension, args.force, check, protected)
    if not is_many(args.inputs):
        return _decode_one_plt(args, files[0].path, outputs[0])
    return _decode_many(args, my_share(list(zip([item.path for item in files], outputs, strict=True))))


def _speaker(tok: Plutok, args: argparse.Namespace) -> Any:
    """The ``--speaker`` vector, computed once for every file, or None."""
    return None if args.speaker is None else tok.speaker_vector(args.speaker)


@contextlib.contextmanager
def _progress(args: argparse.Namespace, seconds: float) -> Iterator[None]:
    """A bar on stderr over the vocoder's chunks while one input decodes, unless ``-q``.

    Shown when stderr is a terminal, or for :data:`LONG_DECODE_SECONDS` of audio or more.
    """
    if args.quiet or not (sys.stderr.isatty() or seconds >= LONG_DECODE_SECONDS):
        yield
        return
    from tqdm import tqdm

    from plutok.chunking import report_progress

    with tqdm(desc=f"decoding {seconds:.0f} s", unit="chunk", file=sys.stderr, leave=False) as bar:

        def update(label: str, done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        with report_progress(update):
            yield


def _report(tokens: int, written: Any, args: argparse.Namespace) -> None:
    voice = f" in the voice of {args.speaker}" if args.speaker else ""
    print(f"{tokens} tokens -> {written.seconds:.2f} s at {written.sample_rate} Hz{voice} -> {written.path}")


def _decode_ids(args: argparse.Namespace, ids: list[int], output: Path) -> int:
    from plutok.errors import ModelError
    from plutok.io.outputs import write_audio_checked

    tok = load_model(args)
    if args.speaker is None and tok.default_speaker is None:
        raise ModelError("this model stores no default voice; give one with --speaker REF.wav (or REF.plt)")
    codes = tok.ids_to_codes(ids)  # unknown ids fail here, before the reference audio is read
    speaker = _speaker(tok, args)
    with _progress(args, codes.shape[0] / tok.codes_per_second):
        wav, rate = tok.decode_ids(ids, speaker=speaker, sample_rate=args.sample_rate)
    _report(len(ids), write_audio_checked(output, wav, rate), args)
    return 0


def _stream_ids(args: argparse.Namespace) -> int:
    """Raw PCM on stdout, chunk by chunk as :meth:`Plutok.decode_stream` yields it.

    From stdin, ids are decoded as they arrive (:func:`stream_ids`): the first audio
    leaves once ``chunk_codes`` + :meth:`Plutok.stream_lookahead_codes` codes are in.
    From a file, every id is checked before any audio is written.
    """
    import numpy as np

    from plutok.errors import ModelError

    tok = load_model(args)
    if args.speaker is None and tok.default_speaker is None:
        raise ModelError("this model stores no default voice; give one with --speaker REF.wav (or REF.plt)")
    speaker = _speaker(tok, args)
    if args.ids == STDIN:
        ids: Iterator[int] | list[int] = stream_ids(sys.stdin.fileno())
    else:
        ids = read_ids(args.ids)
        tok.ids_to_codes(ids)  # unknown ids fail here, before any audio is written
    counted = [0]

    def counting(source: Iterator[int] | list[int]) -> Iterator[int]:
        for token_id in source:
            counted[0] += 1
            yield token_id

    from plutok.streaming import DEFAULT_CHUNK_CODES

    samples = 0
    chunk_codes = args.chunk_codes or DEFAULT_CHUNK_CODES
    for chunk in tok.decode_stream(counting(ids), speaker=speaker, chunk_codes=chunk_codes):
        sys.stdout.buffer.write((np.clip(chunk, -1.0, 1.0) * 32767).astype("<i2").tobytes())
        sys.stdout.buffer.flush()
        samples += chunk.shape[0]
    print(
        f"{counted[0]} tokens -> {samples / tok.sample_rate:.2f} s of 16-bit PCM at {tok.sample_rate} Hz -> stdout",
        file=sys.stderr,
    )
    return 0


def _decode_row(args: argparse.Namespace, corpus: Path, output: Path) -> int:
    from plutok.io.outputs import write_audio_checked
    from plutok.io.shards import find_row

    row = find_row(corpus, row=args.row, path=args.path)
    tok = load_model(args)
    encoding = row_encoding(tok, row, str(corpus))
    speaker = _speaker(tok, args)
    with _progress(args, encoding.duration):
        wav, rate = tok.decode(encoding, sample_rate=args.sample_rate, speaker=speaker)
    _report(len(encoding.ids), write_audio_checked(output, wav, rate), args)
    return 0


def _decode_one_plt(args: argparse.Namespace, source: Path, output: Path) -> int:
    from plutok.io.outputs import write_audio_checked

    tok = ModelForFiles(args)(source)
    encoding = tok.load_plt(source)
    speaker = _speaker(tok, args)
    with _progress(args, encoding.duration):
        wav, rate = tok.decode(encoding, sample_rate=args.sample_rate, speaker=speaker)
    _report(len(encoding.ids), write_audio_checked(output, wav, rate), args)
    return 0


def _decode_many(args: argparse.Namespace, pairs: list[tuple[Path, Path]]) -> int:
    from tqdm import tqdm

    from plutok.errors import PlutokError
    from plutok.io.outputs import write_audio_checked

    models = ModelForFiles(args)
    # A bad --speaker stops the run before any file (for the default model; a bundled
    # older model reads the reference again when a file needs it).
    speakers: dict[int, Any] = {id(models.default): _speaker(models.default, args)}
    started = time.perf_counter()
    done = failed = 0
    seconds = 0.0
    for source, output in tqdm(pairs, desc="decoding", unit="file", disable=args.quiet):
        try:
            tok = models(source)
            if id(tok) not in speakers:
                speakers[id(tok)] = _speaker(tok, args)
            encoding = tok.load_plt(source)
            wav, rate = tok.decode(encoding, sample_rate=args.sample_rate, speaker=speakers[id(tok)])
            written = write_audio_checked(output, wav, rate)
        except PlutokError as error:
            failed += 1
            skipped(source, error)
            continue
        done += 1
        seconds += written.seconds
    elapsed = time.perf_counter() - started
    where = args.output or "beside the inputs"
    rtf = f" (real-time factor {elapsed / seconds:.3f})" if seconds else ""
    print(
        f"{rank_prefix()}decoded {plural(done, 'file')}, {seconds:.1f} s of audio in {elapsed:.1f} s{rtf} -> {where}"
    )
    if failed:
        warn(f"{failed} of {plural(len(pairs), 'file')} could not be decoded (listed above)")
    return many_files_exit(done, failed)
