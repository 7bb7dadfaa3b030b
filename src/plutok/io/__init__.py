"""Input/output helpers: token shards and output paths."""
