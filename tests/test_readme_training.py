"""The README's "Train your own" commands, run as written (with a few steps), give a model roundtrip uses."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def readme_training_commands() -> str:
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("## Train your own", 1)[1]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def test_the_readme_training_section_runs_as_written(tmp_path):
    commands = readme_training_commands()
    assert ".venv/bin/plutok train-codec my-cache/ -o my-run/ --init-from default --steps 300" in commands
    assert "python -m plutok.training" not in commands  # subcommands only
    # Two steps instead of 300 on the stand-in folder: otherwise the commands are the README's.
    commands = commands.replace("--steps 300", "--steps 2 --log-every 1")
    # The checkout: the README runs from the repository root, with the set-up command's .venv.
    (tmp_path / "src").symlink_to(ROOT / "src")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name, line in (
        ("python", f'exec "{sys.executable}" "$@"'),
        ("plutok", f'exec "{sys.executable}" -m plutok "$@"'),
    ):
        (bin_dir / name).write_text(f"#!/bin/sh\n{line}\n")
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run(
        ["bash", "-e", "-c", commands], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "a folder without a manifest: 3 train + 1 dev clips" in result.stderr
    progress = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{"mel_l1"')]
    assert progress and "eta" in progress[-1]
    config = json.loads((tmp_path / "my-model" / "config.json").read_text())
    default = json.loads((ROOT / "src" / "plutok" / "assets" / "default" / "config.json").read_text())
    assert config["frontend"]["members"] == default["frontend"]["members"]  # the v2 kind, from the default
    assert config["codec"]["channels"] == default["codec"]["channels"]
    assert "output: my-roundtrip.wav" in result.stdout and (tmp_path / "my-roundtrip.wav").stat().st_size > 0
