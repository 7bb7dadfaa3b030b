"""``plutok roundtrip``: encode and decode one file; report tokens/s, bitrate and real-time factors."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from plutok.cli.common import UsageError, add_model_options, add_search_options, load_model, positive_int


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", nargs="?", metavar="IN", help="audio file")
    parser.add_argument("--sample", action="store_true", help="use the speech sample bundled with plutok")
    parser.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="decoded audio: OUT.wav/.flac/.ogg/.mp3 or a folder (default IN.decoded.wav beside IN; "
        "sample.decoded.wav here for --sample)",
    )
    parser.add_argument("--plt", metavar="OUT.plt", help="also keep the tokens as a .plt file")
    parser.add_argument(
        "--sample-rate",
        type=positive_int,
        default=None,
        metavar="HZ",
        help="output rate (default: the model's)",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing output you did not name")
    add_model_options(parser)
    add_search_options(parser)


def sample_path() -> Path:
    from plutok.model_directory import default_model_path

    return default_model_path().parent / "sample.flac"


def _outputs(args: argparse.Namespace, source: Path) -> tuple[Path, Path | None]:
    from plutok.errors import PlutokError
    from plutok.io.outputs import check_output_format, check_output_rate, resolve_outputs

    if args.sample and args.output is None:
        # Not beside the sample: that is inside the installed package.
        output = Path("sample.decoded.wav")
        check_output_format(output)
        if output.exists() and not args.force:
            raise PlutokError(
                f"{output}: exists; pass --force to overwrite it, or choose another output with -o"
            )
    else:
        [output] = resolve_outputs([source], args.output, ".decoded", ".wav", args.force)
    if args.sample_rate is not None:
        check_output_rate(output, args.sample_rate)
    plt = None
    if args.plt:
        plt = Path(args.plt)
        if plt.suffix.lower() != ".plt":
            raise PlutokError(f"{plt}: --plt names a .plt file")
        resolve_outputs([source], args.plt, "", ".plt", check_format=lambda path: None)  # never the input
        if plt.resolve() == output.resolve():
            raise PlutokError(f"{plt}: --plt and -o name the same file")
    return output, plt


def run(args: argparse.Namespace) -> int:
    from plutok.io.outputs import write_audio_checked

    if args.sample == (args.input is not None):
        raise UsageError("give either an input file or --sample")
    source = sample_path() if args.sample else Path(args.input)
    output, plt = _outputs(args, source)
    tok = load_model(args)
    started = time.perf_counter()
    encoding = tok.encode_file(source)
    encoded = time.perf_counter()
    wav, rate = tok.decode(encoding, sample_rate=args.sample_rate)
    decoded = time.perf_counter()
    if plt is not None:
        tok.save_plt(encoding, plt)
    written = write_audio_checked(output, wav, rate)
    seconds = encoding.duration
    print(f"input: {source}" + (" [input is silent]" if encoding.silent else ""))
    print(f"tokens: {len(encoding.ids)}")
    print(f"tokens/s: {encoding.tokens_per_second:.1f}  (codes/s: {encoding.codes_per_second:.1f})")
    print(
        f"bitrate: {tok.bitrate(encoding.tokens_per_second, seconds):.0f} bits/s including the speaker vector"
    )
    print(
        f"time: encode {encoded - started:.2f} s, decode {decoded - encoded:.2f} s for {seconds:.2f} s of audio"
    )
    print(
        f"real-time factor: encode {(encoded - started) / seconds:.3f}, decode {(decoded - encoded) / seconds:.3f} "
        "(processing time / audio duration; below 1 is faster than real time)"
    )
    print(f"output: {written.path}")
    return 0
