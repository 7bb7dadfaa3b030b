"""``python -m plutok`` (also what ``torchrun -m plutok`` runs)."""

import sys

from plutok.cli import main

sys.exit(main())
