"""Live streaming: first-audio latency of ``plutok decode --ids - --stream -o -`` fed id by id.

    python scripts/bench_live_stream.py [--model fast] [--rate 0] [--chunk-codes 25]

The bundled sample is encoded; a producer (this script) starts ``plutok decode --ids -
--stream -o -``, waits until it has loaded the model (its CPU time stops growing), then
writes the ids one per line, flushed, at ``--rate`` ids per second (0: the sample's own
token rate, as a language model generating at playback speed would). Reported: the
ids written before the first audio byte came back, and the milliseconds from the first
id written to the first audio byte.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

from plutok import Plutok
from plutok.audio import load_audio
from plutok.model_directory import default_model_path


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until_idle(pid: int, quiet_seconds: float = 2.0) -> None:
    """Until ``pid`` has used no CPU for ``quiet_seconds`` (it waits on stdin, model loaded)."""
    last, still_since = cpu_seconds(pid), time.monotonic()
    while time.monotonic() - still_since < quiet_seconds:
        time.sleep(0.2)
        now = cpu_seconds(pid)
        if now - last > 0.01:
            last, still_since = now, time.monotonic()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="bundled name or directory (default: the default)")
    parser.add_argument("--rate", type=float, default=0.0, help="ids per second (0: the sample's token rate)")
    parser.add_argument("--chunk-codes", type=int, default=25)
    args = parser.parse_args()
    model = Plutok.from_pretrained(args.model)
    wav, rate = load_audio(default_model_path().parent / "sample.flac", model.sample_rate)
    encoding = model.encode(wav, rate)
    ids = encoding.ids
    pace = args.rate or encoding.tokens_per_second
    command = [sys.executable, "-m", "plutok", "decode", "--ids", "-", "--stream", "-o", "-"]
    command += ["--chunk-codes", str(args.chunk_codes)] + (["--model", args.model] if args.model else [])
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    wait_until_idle(process.pid)
    started = time.perf_counter()
    written = 0
    first_audio = None
    while first_audio is None and written < len(ids):
        process.stdin.write(f"{ids[written]}\n".encode())
        written += 1
        due = started + written / pace  # when the next id is written
        while first_audio is None:
            left = due - time.perf_counter()
            if left <= 0 and written < len(ids):
                break
            timeout = left if written < len(ids) else None
            readable, _, _ = select.select([process.stdout], [], [], timeout)
            if readable:
                os.read(process.stdout.fileno(), 1 << 20)
                first_audio = (time.perf_counter() - started, written)
    process.stdin.write(" ".join(map(str, ids[written:])).encode())
    process.stdin.close()
    process.stdout.read()
    process.wait()
    seconds, tokens = first_audio
    print(
        json.dumps(
            {
                "model": args.model or "default",
                "vocoder": model.vocoder.name,
                "ids_per_second": round(pace, 2),
                "chunk_codes": args.chunk_codes,
                "lookahead_codes": model.stream_lookahead_codes(),
                "ids_written_before_first_audio": tokens,
                "codes_behind_them": int(len(model.ids_to_codes(ids[:tokens]))),
                "ms_from_first_id_to_first_audio": round(1000 * seconds),
            }
        )
    )


if __name__ == "__main__":
    main()
