"""``plutok encode``: audio files -> ``.plt`` files, or a whole corpus -> Parquet/JSONL token shards.

Which one follows from ``--format``, else from ``-o``: ``X.parquet``/``X.jsonl`` writes
token shards (:mod:`plutok.io.shards`), anything else ``.plt`` files (one per input,
in a folder that mirrors the input folder for many).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from plutok.cli.common import (
    InputFile,
    UsageError,
    add_model_options,
    add_search_options,
    collect_inputs,
    folder_output,
    is_many,
    load_model,
    many_files_exit,
    my_share,
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

SHARD_FORMATS = ("parquet", "jsonl")
DEFAULT_BATCH_SIZE = 8


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs", nargs="+", metavar="IN", help="audio file(s) or folder(s) (searched recursively)"
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="OUT.plt for one file; a folder (ends in '/' or exists) for .plt files; OUT.parquet, "
        "OUT.jsonl or a folder with --format for token shards (default: IN.plt beside each input)",
    )
    parser.add_argument(
        "--format",
        choices=["plt", *SHARD_FORMATS],
        default=None,
        help="plt: one .plt file per input; parquet/jsonl: token shards, one row per input "
        "(default: from -o's extension, else plt)",
    )
    parser.add_argument(
        "--rows-per-shard",
        type=positive_int,
        default=None,
        metavar="N",
        help="token shards: inputs per shard file (default 10000); a rerun skips finished shards",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help=f"files analysed together (default {DEFAULT_BATCH_SIZE}); the tokens do not depend on it",
    )
    parser.add_argument("--force", action="store_true", help="replace existing .plt files you did not name")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_model_options(parser)
    add_search_options(parser)


def output_format(args: argparse.Namespace) -> str:
    """``plt``, ``parquet`` or ``jsonl``, checked against ``-o`` and ``--rows-per-shard``."""
    suffix = Path(args.output).suffix.lower().lstrip(".") if args.output else ""
    named = suffix if suffix in SHARD_FORMATS and not args.output.endswith(("/", os.sep)) else None
    chosen = args.format or named or "plt"
    if named and chosen != named:
        raise UsageError(f"--format {chosen} contradicts -o {args.output}")
    if chosen in SHARD_FORMATS and not args.output:
        raise UsageError(f"token shards need -o OUT.{chosen} or -o FOLDER/")
    if chosen in SHARD_FORMATS and args.force:
        raise UsageError(
            "--force is for .plt outputs; token shards resume instead (delete them to start over)"
        )
    if chosen == "plt" and args.rows_per_shard is not None:
        raise UsageError("--rows-per-shard is for token shards (-o OUT.parquet, OUT.jsonl or --format)")
    return chosen


def run(args: argparse.Namespace) -> int:
    chosen = output_format(args)
    if chosen == "plt":
        return _encode_plt(args)
    return _encode_shards(args, chosen)


def _describe(encoding: Encoding, output: Path | None = None) -> str:
    line = (
        f"{len(encoding.ids)} tokens for {encoding.duration:.2f} s: {encoding.tokens_per_second:.1f} tokens/s "
        f"({encoding.codes_per_second:.1f} codes/s)"
    )
    if encoding.silent:
        line += " [input is silent]"
    return line + (f" -> {output}" if output else "")


def _check_plt_name(path: Path) -> None:
    from plutok.errors import PlutokError

    if path.suffix.lower() != ".plt":
        raise PlutokError(
            f"{path}: encode writes .plt files (or token shards: .parquet, .jsonl); name the output X.plt"
        )


def _encode_plt(args: argparse.Namespace) -> int:
    from plutok.audio import AUDIO_EXTENSIONS
    from plutok.errors import PlutokError

    files = collect_inputs(args.inputs, AUDIO_EXTENSIONS, "audio files")
    output = folder_output(args.output, args.inputs, (".plt",))
    outputs = resolve_for_rank(files, output, "", ".plt", args.force, _check_plt_name)
    tok = load_model(args)
    if not is_many(args.inputs):
        encoding = tok.encode_file(files[0].path)
        tok.save_plt(encoding, outputs[0])
        print(_describe(encoding, outputs[0]))
        return 0
    targets = dict(my_share(list(zip([item.path for item in files], outputs, strict=True))))
    started = time.perf_counter()
    done = failed = tokens = 0
    seconds = 0.0
    for path, result in tok.encode_files(list(targets), progress=not args.quiet, batch_size=args.batch_size):
        if isinstance(result, PlutokError):
            failed += 1
            skipped(path, result)
            continue
        tok.save_plt(result, targets[path])
        done += 1
        tokens += len(result.ids)
        seconds += result.duration
    elapsed = time.perf_counter() - started
    where = args.output or "beside the inputs"
    print(
        f"{rank_prefix()}encoded {plural(done, 'file')}, {seconds:.1f} s of audio, {tokens} tokens "
        f"({tokens / seconds if seconds else 0.0:.1f} tokens/s) in {elapsed:.1f} s{_rtf(elapsed, seconds)} -> {where}"
    )
    if failed:
        warn(f"{failed} of {plural(len(targets), 'file')} could not be encoded (listed above)")
    return many_files_exit(done, failed)


def _rtf(elapsed: float, seconds: float) -> str:
    return f" (real-time factor {elapsed / seconds:.3f})" if seconds else ""


# -- token shards ---------------------------------------------------------------------------------
def row_names(files: list[InputFile]) -> list[tuple[Path, str]]:
    """``(file, row path)``: the path relative to the deepest folder holding every input (POSIX).

    ``plutok encode corpus/`` gives ``spk1/a.wav``; ``plutok encode c1/ c2/`` gives
    ``c1/a.wav`` and ``c2/a.wav``; so two inputs never share a row path.
    """
    from plutok.errors import PlutokError

    def folder_of(item: InputFile) -> Path:
        # The folder the user named (for files found in it), else the file's own folder.
        depth = len(item.name.parts) - 1
        path = Path(os.path.abspath(item.path))
        for _ in range(depth + 1):
            path = path.parent
        return path

    roots = {folder_of(item) for item in files}
    root = Path(os.path.commonpath([str(path) for path in roots]))
    named: dict[str, Path] = {}
    rows = []
    for item in files:
        absolute = Path(os.path.abspath(item.path))
        name = absolute.relative_to(root).as_posix()
        if name in named:
            if named[name] == absolute:
                continue  # the same file given twice
            raise PlutokError(f"{named[name]} and {absolute} would both be row {name}")
        named[name] = absolute
        rows.append((item.path, name))
    return rows


def _encode_shards(args: argparse.Namespace, chosen: str) -> int:
    from plutok import distributed
    from plutok.audio import AUDIO_EXTENSIONS
    from plutok.errors import PlutokError
    from plutok.io.shards import DEFAULT_ROWS_PER_SHARD, ShardWriter, write_token_shards

    files = collect_inputs(args.inputs, AUDIO_EXTENSIONS, "audio files")
    rows = row_names(files)
    source_of = {name: path for path, name in rows}
    context = distributed.env_context()
    rows_per_shard = args.rows_per_shard or DEFAULT_ROWS_PER_SHARD
    # Check the output (format, manifest of an earlier run) before the model loads.
    ShardWriter(args.output, chosen, rows_per_shard, context.rank, context.world_size)  # type: ignore[arg-type]
    tok = load_model(args)

    def results_for_shard(names: list[Path]):
        by_file = {source_of[name.as_posix()]: name for name in names}
        for path, result in tok.encode_files(list(by_file), progress=False, batch_size=args.batch_size):
            name = by_file[path]
            if isinstance(result, PlutokError):
                yield name, result
            else:
                yield name, _token_row(tok, name.as_posix(), result)

    started = time.perf_counter()
    summary = write_token_shards(
        results_for_shard,
        [Path(name) for name in source_of],
        args.output,
        format=chosen,  # type: ignore[arg-type]
        rows_per_shard=rows_per_shard,
        rank=context.rank,
        world=context.world_size,
        progress=not args.quiet,
        fingerprint=tok.token_space,
    )
    elapsed = time.perf_counter() - started
    before = f", {summary.skipped} done before" if summary.skipped else ""
    print(
        f"{rank_prefix()}wrote {summary.written} of {plural(summary.shards, chosen + ' shard')}{before}: "
        f"{plural(summary.rows, 'row')}, {summary.seconds:.1f} s of audio in {elapsed:.1f} s"
        f"{_rtf(elapsed, summary.seconds)} -> {summary.output}"
    )
    if summary.failures_file is not None:
        listed = summary.failures_file.read_text(encoding="utf-8").splitlines()
        if any(line.strip() for line in listed):
            count = sum(1 for line in listed if line.strip())
            warn(f"{count} input(s) gave no row; they are listed in {summary.failures_file}")
    return many_files_exit(summary.rows or summary.skipped, summary.failed)


def _token_row(tok: Plutok, name: str, encoding: Encoding) -> TokenRow:
    from plutok.io.shards import TokenRow

    return TokenRow(
        path=name,
        duration=encoding.duration,
        sample_rate=encoding.sample_rate,
        num_samples=encoding.num_samples,
        num_codes=encoding.num_codes,
        token_ids=list(encoding.ids),
        speaker=encoding.speaker.tolist(),
        fingerprint=tok.token_space,
    )
