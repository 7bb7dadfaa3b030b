"""``python -m plutok`` (also what ``torchrun -m plutok`` runs)."""

from plutok.cli import run

run()
