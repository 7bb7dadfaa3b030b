"""What every ``plutok`` command shares: options, the model, input lists, usage errors.

Heavy modules (torch, the model) are imported inside functions, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plutok.api import Plutok

__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "InputFile",
    "UsageError",
    "add_device_option",
    "add_model_options",
    "add_search_options",
    "add_threads_option",
    "collect_inputs",
    "device_name",
    "folder_output",
    "load_model",
    "my_share",
    "non_negative_int",
    "plural",
    "positive_int",
    "positive_seconds",
    "rank_prefix",
    "resolve_for_rank",
    "warn",
]

EXIT_ERROR = 1  # a PlutokError: bad input, foreign file, unknown ids, broken model, unwritable output
EXIT_USAGE = 2  # the command line itself is wrong (argparse's code, also for options that contradict)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)

_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


class UsageError(Exception):
    """Options that contradict each other: reported like an argparse error (usage line, exit 2)."""


# -- option types ---------------------------------------------------------------------------------
def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_seconds(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def device_name(text: str) -> str:
    """argparse type: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    if not _DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; use auto, cpu, cuda or cuda:N")
    return text


# -- options ------------------------------------------------------------------------------------
def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--chunk-seconds``, ``--device`` and ``--threads``."""
    from plutok.catalog import bundled_model_names

    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        metavar="DIR",
        default=None,
        help=f"bundled model name: {', '.join(bundled_model_names())}, or a model directory given as a path "
        "(./NAME for a folder here) (default: the "
        "bundled default model; decoding .plt files without --model uses the bundled model that made each file)",
    )
    group.add_argument(
        "--chunk-seconds",
        type=positive_seconds,
        default=None,
        metavar="S",
        help="process long audio in chunks of S seconds; bounds memory, same tokens (default 30)",
    )
    add_device_option(group)
    add_threads_option(group)


def add_search_options(parser: argparse.ArgumentParser) -> None:
    """``--search`` and ``--search-settings`` (encoding commands; :mod:`plutok.codec.search`)."""
    group = parser.add_argument_group("code search")
    group.add_argument(
        "--search",
        action="store_true",
        help="choose each code by what the model's decoder renders of it (analysis by synthesis): "
        "decoded speech nearer the input, same token space, ~25x slower encoding, audio up to one "
        "chunk (--chunk-seconds)",
    )
    group.add_argument(
        "--search-settings",
        metavar="K[,SWEEPS[,FIT]]",
        default=None,
        help="with --search: candidate codes per frame, sweeps over the frames, latent fit steps "
        "(default 8,2,25)",
    )


def search_settings(args: argparse.Namespace) -> Any:
    """The :class:`~plutok.codec.search.CodeSearch` the options ask for, or None."""
    settings = getattr(args, "search_settings", None)
    if not getattr(args, "search", False):
        if settings is not None:
            raise UsageError("--search-settings needs --search")
        return None
    from plutok.codec.search import CodeSearch

    return CodeSearch.parse(settings or "")


def add_device_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--device",
        type=device_name,
        default="cpu",
        metavar="auto|cpu|cuda",
        help="where the model runs (default cpu: the default model's tokens are the same on every x86-64 CPU, "
        "measured; GPU tokens are not measured against them); auto picks a GPU "
        "when torch sees one; under torchrun, cuda means each rank's GPU LOCAL_RANK",
    )


def add_threads_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--threads", type=positive_int, default=None, metavar="N", help="torch CPU threads (default: torch's)"
    )


def set_threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def load_model(args: argparse.Namespace) -> Plutok:
    """The model the options name, moved to ``--device``."""
    from plutok import distributed
    from plutok.api import DEFAULT_CHUNK_SECONDS, Plutok
    from plutok.devices import resolve_device
    from plutok.errors import PlutokError

    chunk = getattr(args, "chunk_seconds", None)
    if chunk is not None and not chunk > 0:
        raise PlutokError(f"--chunk-seconds must be positive, got {chunk}")
    device = resolve_device(getattr(args, "device", None) or "cpu")
    context = distributed.env_context()
    if device == "cuda" and context.distributed:
        device = f"cuda:{context.local_rank}"  # one GPU per torchrun process
    tok = Plutok.from_pretrained(
        args.model, chunk_seconds=chunk or DEFAULT_CHUNK_SECONDS, search=search_settings(args)
    )
    return tok.to(device) if device != "cpu" else tok


class ModelForFiles:
    """The model to decode each ``.plt`` file with.

    With ``--model``, that model for every file (it reads the files of its token space:
    ``--model fast`` decodes the default's). Without it, the bundled default, or, for a
    file of another bundled model's token space (``v1``), that model. A file of a model
    earlier releases bundled is refused with one line naming the release and commit that
    decode it (:data:`plutok.catalog.RETIRED_MODELS`).
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.default = load_model(args)
        self._by_fingerprint: dict[bytes, Plutok | None] = {}

    def __call__(self, path: Path) -> Plutok:
        if self.args.model is not None:
            return self.default
        from plutok.container import read_plt
        from plutok.errors import ContainerError

        try:
            fingerprint = read_plt(path).fingerprint
        except ContainerError:
            return self.default  # its own load_plt reports what is wrong with the file
        if fingerprint not in self._by_fingerprint:
            self._by_fingerprint[fingerprint] = (
                self.default if self.default.reads(fingerprint) else self._bundled(fingerprint)
            )
        return self._by_fingerprint[fingerprint] or self.default

    def _bundled(self, fingerprint: bytes) -> Plutok | None:
        """The bundled model whose token space the file is of, if any."""
        from plutok.catalog import bundled_model_names
        from plutok.errors import PlutokError

        for name in bundled_model_names():
            if name == "default":
                continue
            try:
                model = load_model(argparse.Namespace(**{**vars(self.args), "model": name}))
            except PlutokError:
                continue  # a bundled model that cannot load here cannot have made the file
            if model.reads(fingerprint):
                warn(f"files made by the bundled model {name!r} are decoded with it")
                return model
        return None


# -- inputs -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InputFile:
    """A file to process and where it sits in the input: ``name`` relative to its folder argument."""

    path: Path
    name: PurePosixPath  # ``spk1/a.wav`` for a file found in a folder argument, ``a.wav`` for a file argument


def collect_inputs(arguments: Sequence[str], extensions: Sequence[str], what: str) -> list[InputFile]:
    """Files given on the command line, and the files with ``extensions`` in folders (recursive, sorted).

    A file argument is taken as it is, whatever its extension (a bad one fails when read).
    Hidden files (``.name``, e.g. the ``._x.wav`` that macOS leaves) are not searched.
    ``what`` names the files in messages (``"audio files"``).
    Raises:
        PlutokError: a folder argument holds no such files.
    """
    from plutok.audio import find_files
    from plutok.errors import PlutokError

    found: list[InputFile] = []
    lowered = tuple(extension.lower() for extension in extensions)
    for argument in arguments:
        source = Path(argument)
        if source.is_dir():
            inside = find_files(source, lowered)
            if not inside:
                raise PlutokError(f"{source}: no {what} in this folder (looked for {' '.join(lowered)})")
            found.extend(
                InputFile(path, PurePosixPath(path.relative_to(source).as_posix())) for path in inside
            )
        else:
            found.append(InputFile(source, PurePosixPath(source.name)))
    return found


def resolve_for_rank(
    files: Sequence[InputFile],
    output: str | None,
    suffix: str,
    extension: str,
    force: bool,
    check_format: Any = None,
    protected: Sequence[str | os.PathLike] = (),
) -> list[Path]:
    """:func:`plutok.io.outputs.resolve_outputs` for ``files``, keeping each folder's layout under ``-o FOLDER/``.

    Under torchrun another rank may already have written its outputs: names, formats and
    collisions are checked over all inputs, existing files only among this rank's
    (:func:`my_share`) own. ``protected``: other files the command reads (never replaced).
    """
    from plutok import distributed
    from plutok.errors import PlutokError
    from plutok.io.outputs import resolve_outputs

    paths = [item.path for item in files]
    names = [Path(item.name) for item in files]
    if not distributed.env_context().distributed:
        return resolve_outputs(paths, output, suffix, extension, force, names, check_format, protected)
    outputs = resolve_outputs(paths, output, suffix, extension, True, names, check_format, protected)
    named = output is not None and len(outputs) == 1 and Path(output) == outputs[0]
    for target in my_share(outputs):
        if target.exists() and not force and not named:
            raise PlutokError(
                f"{target}: exists; pass --force to overwrite it, or choose another output with -o"
            )
    return outputs


def is_many(arguments: Sequence[str]) -> bool:
    """Several inputs, or a folder: bad files are skipped; one file: its error ends the command."""
    return len(arguments) != 1 or Path(arguments[0]).is_dir()


def folder_output(output: str | None, arguments: Sequence[str], file_suffixes: Sequence[str]) -> str | None:
    """``-o`` as given, or as a folder (``OUT/``) for many inputs when it names no file of the kind made.

    ``plutok encode corpus/ -o out`` writes into ``out/`` even when it does not exist yet.
    """
    if output is None or not is_many(arguments) or Path(output).suffix.lower() in file_suffixes:
        return output
    return output if output.endswith(("/", os.sep)) else output + os.sep


def my_share(items: Sequence[Any]) -> list[Any]:
    """This torchrun rank's part of ``items`` (every ``world``-th, from ``rank``); all of them alone."""
    from plutok import distributed

    context = distributed.env_context()
    return list(items[context.rank :: context.world_size])


def rank_prefix() -> str:
    """``"rank 1/4: "`` under torchrun, else ``""``: every rank prints its own summary."""
    from plutok import distributed

    context = distributed.env_context()
    return f"rank {context.rank}/{context.world_size}: " if context.distributed else ""


def plural(count: int, word: str) -> str:
    """``"1 file"``, ``"3 files"``."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def warn(message: str) -> None:
    """One ``plutok: warning: ...`` line on stderr (above a progress bar, if one is running)."""
    from tqdm import tqdm

    tqdm.write(f"plutok: warning: {message}", file=sys.stderr)


def skipped(path: os.PathLike | str, error: BaseException) -> None:
    """One ``plutok: skipped PATH: reason`` line for a bad file in a many-file run."""
    from tqdm import tqdm

    message = str(error)
    # Most messages already start with the path; do not say it twice.
    text = message if message.startswith(str(path)) else f"{path}: {message}"
    tqdm.write(f"plutok: skipped {text}", file=sys.stderr)


def many_files_exit(done: int, failed: int) -> int:
    """Exit status of a many-file run: 0 when something was done (failures are warned about), else 1."""
    return EXIT_ERROR if failed and not done else 0
