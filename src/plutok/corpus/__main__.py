"""``python -m plutok.corpus build OUT_DIR ...``"""

import argparse
import sys

from plutok.corpus import configure_parser, run

parser = argparse.ArgumentParser(prog="python -m plutok.corpus", description="Plutok training corpus builder")
configure_parser(parser)
sys.exit(run(parser.parse_args()))
