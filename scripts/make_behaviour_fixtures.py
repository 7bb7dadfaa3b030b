"""Write the behaviour fixture of the bundled default model: ``tests/fixtures/default/sample-3s-expected.npz``.

The first 3 s of the bundled sample, encoded and decoded by the bundled ``default``
model: token ids, codes, speaker vector, the model fingerprint (hex) and the decoded
waveform (float16). ``tests/test_default_fixture.py`` checks that the package still
gives exactly these ids and this fingerprint, and this audio within the kernel tolerance.
Rerun only when a change is meant to change the default model's behaviour::

    PYTHONPATH=src python scripts/make_behaviour_fixtures.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from plutok.api import Plutok
from plutok.model_directory import default_model_path

SECONDS = 3.0
OUTPUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "default" / "sample-3s-expected.npz"


def main() -> None:
    model = Plutok.from_pretrained()
    wav, rate = sf.read(default_model_path().parent / "sample.flac", dtype="float32")
    encoding = model.encode(wav[: int(SECONDS * rate)], rate)
    decoded, out_rate = model.decode(encoding)
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        OUTPUT,
        ids=np.asarray(encoding.ids, dtype=np.int64),
        codes=np.asarray(model.ids_to_codes(encoding.ids), dtype=np.int64),
        speaker=np.asarray(encoding.speaker, dtype=np.float32),
        fingerprint=np.asarray(model.fingerprint),
        sample_rate=np.asarray(out_rate),
        decoded=decoded.astype(np.float16),
    )
    print(
        f"{OUTPUT}: {len(encoding.ids)} ids, {decoded.shape[0]} samples, fingerprint {model.fingerprint[:16]}"
    )


if __name__ == "__main__":
    main()
