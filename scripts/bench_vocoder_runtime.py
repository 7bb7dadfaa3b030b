"""Faster runtimes for the packaged HiFi-GAN, measured against the plain TorchScript module.

    python scripts/bench_vocoder_runtime.py [--seconds 10] [--repeats 3]

Variants: the module as loaded (what Plutok runs), ``torch.jit.freeze``,
``torch.jit.optimize_for_inference`` of the frozen module, and (when ``onnxruntime``
is installed: ``pip install onnxruntime``) the module exported to ONNX
(TorchScript exporter, opset 17, dynamic frame axis) run by ONNX Runtime with all
graph optimisations; each with 1 and 2 threads. Every variant runs on the same log-mel (the bundled sample, tiled), the
variants interleaved ``--repeats`` times; reported: best wall time, real-time factor,
and the largest absolute difference of the waveform from the plain module's.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from plutok.audio import load_audio
from plutok.frontends.mel import LogMel
from plutok.model_directory import default_model_path
from plutok.vocoders.hifigan import vocoder_path


def _onnx_sessions(module: torch.jit.ScriptModule, mel: torch.Tensor) -> dict[int, object]:
    """ONNX Runtime sessions (1 and 2 intra-op threads) of ``module``; empty without onnxruntime."""
    try:
        import onnxruntime
    except ImportError:
        return {}
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp()) / "hifigan.onnx"
    torch.onnx.export(
        module,
        (mel,),
        str(path),
        input_names=["log_mel"],
        output_names=["waveform"],
        dynamic_axes={"log_mel": {2: "frames"}, "waveform": {2: "samples"}},
        opset_version=17,
        dynamo=False,
    )
    sessions = {}
    for threads in (1, 2):
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        sessions[threads] = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
    for session in sessions.values():  # warm-up
        session.run(None, {"log_mel": mel.numpy()})
    return sessions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    wav, _ = load_audio(default_model_path().parent / "sample.flac", 16000)
    wav = np.resize(wav, int(args.seconds * 16000))
    mel = torch.from_numpy(LogMel()(wav))[None]
    plain = torch.jit.load(str(vocoder_path()), map_location="cpu").eval()
    frozen = torch.jit.freeze(torch.jit.load(str(vocoder_path()), map_location="cpu").eval())
    optimized = torch.jit.optimize_for_inference(
        torch.jit.freeze(torch.jit.load(str(vocoder_path()), map_location="cpu").eval())
    )
    variants = {"plain": plain, "freeze": frozen, "optimize_for_inference": optimized}
    sessions = _onnx_sessions(plain, mel)
    with torch.inference_mode():
        reference = plain(mel).reshape(-1).numpy()
        best: dict[str, float] = {}
        difference: dict[str, float] = {}
        for module in variants.values():  # warm-up (TorchScript specialises on the first calls)
            module(mel)
            module(mel)
        for _ in range(args.repeats):
            for threads in (1, 2):
                torch.set_num_threads(threads)
                for name, module in variants.items():
                    start = time.perf_counter()
                    out = module(mel).reshape(-1).numpy()
                    key = f"{name}, {threads} thread(s)"
                    best[key] = min(best.get(key, float("inf")), time.perf_counter() - start)
                    difference[name] = float(np.abs(out - reference).max())
                if sessions:
                    session = sessions[threads]
                    feed = {session.get_inputs()[0].name: mel.numpy()}
                    start = time.perf_counter()
                    out = session.run(None, feed)[0].reshape(-1)
                    key = f"onnxruntime, {threads} thread(s)"
                    best[key] = min(best.get(key, float("inf")), time.perf_counter() - start)
                    difference["onnxruntime"] = float(np.abs(out - reference).max())
    rows = {
        key: {"seconds": round(value, 3), "rtf": round(value / args.seconds, 3)}
        for key, value in best.items()
    }
    print(
        json.dumps(
            {
                "audio_seconds": args.seconds,
                "best_of": args.repeats,
                "variants": rows,
                "max_abs_difference_from_plain": difference,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
