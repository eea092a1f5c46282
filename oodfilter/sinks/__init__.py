"""Where scan results go: manifests (JSONL, CSV, Parquet) and journaled file actions."""
