"""The ``plutok`` command: one entry point, a subcommand per job, ``--help`` everywhere.

Exit status: 0 done (a many-file run that skipped some bad files, with a warning
line, counts as done); 1 a :class:`~plutok.errors.PlutokError` (bad audio, a foreign
``.plt``, unknown token ids, a broken model, an unsafe or unwritable output), shown
as one ``plutok: error: ...`` line, and a many-file run in which no file worked; 2 the
command line is wrong (argparse's usage errors, and options that contradict each
other); 130 interrupted by Ctrl-C. An unexpected exception (a bug) also ends in one
``plutok: error: internal error: ...`` line with status 1; ``--debug`` (or the environment
variable ``PLUTOK_DEBUG=1``) prints the traceback of any error as well.

One module per command group: :mod:`~plutok.cli.encode`, :mod:`~plutok.cli.decode`,
:mod:`~plutok.cli.roundtrip`, :mod:`~plutok.cli.info`, :mod:`~plutok.cli.training`;
shared options and helpers in :mod:`~plutok.cli.common`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from plutok import __version__
from plutok.cli import decode, encode, info, roundtrip, training
from plutok.cli.common import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, UsageError, set_threads

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_USAGE", "build_parser", "main", "run"]

Handler = Callable[[argparse.Namespace], int]

# Modules with their own configure_parser/run; they keep heavy imports (whisper, ...) inside functions.
_EXTERNAL = (
    ("convert", "plutok.convert", "convert the original Plutok release into a model directory"),
    ("eval", "plutok.evaluation.cli", "measure quality and bitrate against classical codecs"),
    ("bench", "plutok.bench", "measure encode/decode speed and memory"),
    ("corpus", "plutok.corpus", "build the offline training corpus"),
    (
        "export-onnx",
        "plutok.export",
        "write the decode path (codes + speaker -> waveform, fast vocoder) as ONNX, for decoding without torch",
    ),
)


_DEBUG_HELP = "on an error, print the traceback too (also: environment variable PLUTOK_DEBUG=1)"


def _debugging(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get("PLUTOK_DEBUG", "") not in ("", "0")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plutok",
        description="Multilingual speech <-> very few discrete tokens. Run 'plutok COMMAND --help' for details.",
        epilog="Exit status: 0 done, 1 error (one 'plutok: error:' line), 2 bad command line, 130 Ctrl-C.",
    )
    parser.add_argument("--version", action="version", version=f"plutok {__version__}")
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help_text: str, handler: Handler) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler, subparser=sub)
        # SUPPRESS: ``plutok --debug encode ...`` is not undone by the subcommand's default.
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)
        return sub

    for name, module, help_text in (
        (
            "encode",
            encode,
            "tokenize audio files into .plt files, or a corpus into Parquet/JSONL token shards",
        ),
        (
            "decode",
            decode,
            "speech from .plt files, bare token ids or a token-shard row (optionally in another voice)",
        ),
        (
            "roundtrip",
            roundtrip,
            "tokenize and decode one file; report token rate, bitrate, real-time factors",
        ),
        ("info", info, "facts about a model directory or a .plt file"),
    ):
        module.configure(command(name, help_text, module.run))
    training.register(command)
    for name, module, help_text in _EXTERNAL:
        loaded = importlib.import_module(module)
        loaded.configure_parser(command(name, help_text, loaded.run))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    from plutok.errors import PlutokError

    debug = _debugging(args)
    try:
        set_threads(args)
        return int(args.handler(args) or 0)
    except UsageError as error:
        args.subparser.print_usage(sys.stderr)
        print(f"{args.subparser.prog}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except PlutokError as error:
        _traceback(debug)
        print(f"plutok: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        _traceback(debug)
        print("plutok: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_ERROR
    except OSError as error:  # unwritable output folder, full disk, -o naming a directory, ...
        _traceback(debug)
        where = f"{error.filename}: " if error.filename else ""
        print(f"plutok: error: {where}{error.strerror or error}", file=sys.stderr)
        return EXIT_ERROR
    except MemoryError:
        _traceback(debug)
        print("plutok: error: out of memory", file=sys.stderr)
        return EXIT_ERROR
    except Exception as error:  # a bug, or a failure nobody foresaw: still one line, not a traceback
        _traceback(debug)
        text = " ".join(str(error).split())
        text = text if len(text) <= 300 else text[:300] + "..."
        hint = "" if debug else "; rerun with --debug (or PLUTOK_DEBUG=1) for the traceback"
        print(f"plutok: error: internal error: {type(error).__name__}: {text}{hint}", file=sys.stderr)
        return EXIT_ERROR


def _traceback(debug: bool) -> None:
    if debug:
        traceback.print_exc()


def run() -> None:
    """The ``plutok`` command: :func:`main` on ``sys.argv``, then exit with its status.

    Under ``torchrun`` the exit skips the interpreter's teardown (see
    :func:`plutok.distributed.exit_process`).
    """
    from plutok.distributed import exit_process

    exit_process(main())


if __name__ == "__main__":
    run()
