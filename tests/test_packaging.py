"""Packaging: the installed package is what ``import plutok`` finds, even beside a folder called plutok."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_a_plutok_folder_next_to_a_script_does_not_shadow_the_package(tmp_path):
    # A clone of the repository (or any folder) named plutok in the working directory.
    (tmp_path / "plutok" / "docs").mkdir(parents=True)
    found = subprocess.run(
        [sys.executable, "-c", "import plutok; print(plutok.__file__); print(plutok.__version__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert found[0].endswith(str(Path("plutok") / "__init__.py")) and not found[0].startswith(str(tmp_path))
    assert found[1] == __import__("plutok").__version__


def test_the_cli_starts_without_torch():
    """``plutok --help`` builds every option (defaults from the settings dataclasses) without loading torch."""
    code = "import sys; from plutok.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert found.strip() == "False"


def test_every_help_runs_without_torch():
    """``plutok --help`` and ``plutok COMMAND --help`` for every command print without importing torch."""
    code = """
import argparse, contextlib, io, sys
from plutok.cli import build_parser, main
[commands] = [a.choices for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
for argv in [["--help"]] + [[name, "--help"] for name in sorted(commands)]:
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
        main(argv)
    assert "usage: plutok" in out.getvalue(), argv
    print(" ".join(argv), "torch" in sys.modules)
"""
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    lines = found.strip().splitlines()
    assert len(lines) > 10 and all(line.endswith(" False") for line in lines), found
