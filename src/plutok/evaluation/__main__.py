"""``python -m plutok.evaluation ...`` is ``plutok eval ...``."""

import sys

from plutok.evaluation.cli import main

sys.exit(main())
