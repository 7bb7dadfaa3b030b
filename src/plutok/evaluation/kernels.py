"""Token agreement across CPU kernel sets: are the tokens the same on every machine?

CTranslate2 (the Whisper frontend), ATen and oneDNN (the codec) each pick their SIMD
kernels from the CPU they run on, and float summation order differs between kernels. A
CPU that lacks AVX-512 therefore computes slightly different features; where a feature
vector sits near the boundary between two codes, its code changes. This module encodes the
same clips once per *kernel set* — the environment variables that force each library onto
the kernels of an older CPU — each in a fresh process (the libraries read them at load
time), and counts the codes that differ from the native run.

    python -m plutok.evaluation.kernels clips/*.flac --model default --kernels native generic avx avx2

A kernel set the CPU cannot run (AVX-512 on an AVX2 machine) is skipped with a note.
``--search [SETTINGS]`` encodes with code search (:mod:`plutok.codec.search`) instead, and
also counts the clips whose (fitted) speaker vector changed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["KERNEL_SETS", "KernelAgreement", "available_kernel_sets", "encode_under", "compare", "main"]

# Each set forces all three libraries down to one instruction set. ATen has no AVX-only
# level: "default" is its non-vectorised baseline, used for both "generic" and "avx".
KERNEL_SETS: dict[str, dict[str, str]] = {
    "native": {},
    "generic": {
        "CT2_FORCE_CPU_ISA": "GENERIC",
        "ATEN_CPU_CAPABILITY": "default",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
    },
    "avx": {"CT2_FORCE_CPU_ISA": "AVX", "ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "AVX"},
    "avx2": {"CT2_FORCE_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "avx512": {
        "CT2_FORCE_CPU_ISA": "AVX512",
        "ATEN_CPU_CAPABILITY": "avx512",
        "ONEDNN_MAX_CPU_ISA": "AVX512_CORE",
    },
}
_REQUIRED_FLAG = {"avx": "avx", "avx2": "avx2", "avx512": "avx512f"}


def available_kernel_sets() -> list[str]:
    """The kernel sets this CPU can run (by its /proc/cpuinfo flags; all of them elsewhere)."""
    try:
        flags = set()
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags.update(line.split(":", 1)[1].split())
                break
    except OSError:
        return list(KERNEL_SETS)
    return [
        name for name in KERNEL_SETS if _REQUIRED_FLAG.get(name, "") in flags or name not in _REQUIRED_FLAG
    ]


@dataclass(frozen=True)
class KernelAgreement:
    """How one kernel set's codes compare with the reference run's, over all clips."""

    kernel_set: str
    clips: int
    clips_changed: int
    codes: int
    codes_changed: int
    token_ids_changed_clips: int
    speaker_changed_clips: int = 0

    @property
    def code_agreement(self) -> float:
        """Share of codes equal to the reference's (1.0 = identical)."""
        return 1.0 - self.codes_changed / max(self.codes, 1)


def _model_with_compute_type(model: str, compute_type: str, workdir: Path) -> str:
    """A copy of ``model``'s directory whose Whisper frontend runs at ``compute_type``."""
    from ..catalog import BUNDLED_MODELS
    from ..model_directory import bundled_model_path

    source = (
        bundled_model_path(model) if model in BUNDLED_MODELS and not Path(model).exists() else Path(model)
    )
    target = workdir / f"{source.name}-{compute_type}"
    if not target.exists():
        import shutil

        shutil.copytree(source, target)
        config_path = target / "config.json"
        config = json.loads(config_path.read_text())

        def override(frontend: dict) -> None:
            if frontend.get("name") == "whisper-encoder":
                frontend["compute_type"] = compute_type
            for member in frontend.get("members", []):
                override(member)

        override(config["frontend"])
        config_path.write_text(json.dumps(config, indent=2))
    return str(target)


def encode_under(
    kernel_set: str, model: str, paths: Sequence[str], threads: int = 1, search: str | None = None
) -> dict[str, dict]:
    """Encode ``paths`` in a fresh process under ``kernel_set`` (with code search: ``search``
    in the form of ``--search-settings``, ``""`` for the defaults).

    Returns:
        ``{path: {"codes": [...], "ids": [...], "speaker": [...]}}``.
    """
    env = {**os.environ, **KERNEL_SETS[kernel_set]}
    with tempfile.TemporaryDirectory() as workdir:
        output = Path(workdir) / "codes.json"
        command = [sys.executable, "-m", "plutok.evaluation.kernels", "--worker", "--model", model]
        command += ["--threads", str(threads), "--output", str(output), *map(str, paths)]
        if search is not None:
            command += ["--search", "--search-settings", search]
        subprocess.run(command, env=env, check=True)
        return json.loads(output.read_text())


def compare(kernel_set: str, reference: dict[str, dict], other: dict[str, dict]) -> KernelAgreement:
    """Count codes that differ frame by frame (a length change counts every extra frame)."""
    codes = codes_changed = clips_changed = ids_changed = speakers_changed = 0
    for path, expected in reference.items():
        got = other[path]
        length = max(len(expected["codes"]), len(got["codes"]))
        differ = sum(a != b for a, b in zip(expected["codes"], got["codes"], strict=False)) + abs(
            len(expected["codes"]) - len(got["codes"])
        )
        codes += length
        codes_changed += differ
        clips_changed += differ > 0
        ids_changed += expected["ids"] != got["ids"]
        speakers_changed += expected.get("speaker") != got.get("speaker")
    return KernelAgreement(
        kernel_set, len(reference), clips_changed, codes, codes_changed, ids_changed, speakers_changed
    )


def _worker(model: str, paths: Sequence[str], threads: int, output: Path, search: str | None) -> None:
    import torch

    from ..api import Plutok
    from ..audio import load_audio
    from ..codec.search import CodeSearch

    torch.set_num_threads(threads)
    tokenizer = Plutok.from_pretrained(model, search=None if search is None else CodeSearch.parse(search))
    result = {}
    for path in paths:
        wav, rate = load_audio(path)
        encoding = tokenizer.encode(wav, rate)
        result[path] = {
            "codes": tokenizer.ids_to_codes(encoding.ids).tolist(),
            "ids": encoding.ids,
            "speaker": encoding.speaker.tolist(),
        }
    output.write_text(json.dumps(result))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m plutok.evaluation.kernels",
        description="Encode clips under forced CPU kernel sets and report how many codes change.",
    )
    parser.add_argument("paths", nargs="+", help="audio files (real speech is the case that matters)")
    parser.add_argument(
        "--model", default="default", help="bundled name or model directory (default: default)"
    )
    parser.add_argument(
        "--kernels",
        nargs="+",
        default=["native", "generic", "avx", "avx2", "avx512"],
        choices=list(KERNEL_SETS),
        help="kernel sets; the first is the reference (default: all this CPU runs)",
    )
    parser.add_argument(
        "--compute-type",
        choices=["int8", "int8_float32", "float32"],
        help="run the Whisper frontend at this precision instead of the model's",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch/CTranslate2 threads per run (default: 1)"
    )
    parser.add_argument("--search", action="store_true", help="encode with code search")
    parser.add_argument(
        "--search-settings",
        default="",
        metavar="K[,SWEEPS[,FIT[,SPEAKER]]]",
        help="with --search: its settings (default: the library's)",
    )
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    search = args.search_settings if args.search else None
    if args.worker:
        _worker(args.model, args.paths, args.threads, args.output, search)
        return 0

    from ..codec.search import CodeSearch

    runnable = available_kernel_sets()
    kernel_sets = [name for name in args.kernels if name in runnable]
    for skipped in sorted(set(args.kernels) - set(kernel_sets)):
        print(f"skipped {skipped}: this CPU lacks it", file=sys.stderr)
    with tempfile.TemporaryDirectory() as workdir:
        model = args.model
        if args.compute_type:
            model = _model_with_compute_type(model, args.compute_type, Path(workdir))
        runs = {name: encode_under(name, model, args.paths, args.threads, search) for name in kernel_sets}
    reference_name = kernel_sets[0]
    rows = [compare(name, runs[reference_name], runs[name]) for name in kernel_sets[1:]]
    print(
        f"reference: {reference_name}; model {args.model}"
        + (f" ({args.compute_type})" if args.compute_type else "")
        + (f"; code search {CodeSearch.parse(search)}" if search is not None else "")
    )
    print(
        "| kernel set | clips changed | codes changed | code agreement | token ids changed (clips) "
        "| speaker vectors changed (clips) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row.kernel_set} | {row.clips_changed} / {row.clips} | {row.codes_changed} / {row.codes} | "
            f"{100 * row.code_agreement:.2f} % | {row.token_ids_changed_clips} | {row.speaker_changed_clips} |"
        )
    if args.json:
        args.json.write_text(json.dumps([row.__dict__ for row in rows], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
