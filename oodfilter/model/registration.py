"""Registration of oodfilter's own open_clip model configs (``test-tiny``)."""

from __future__ import annotations

from pathlib import Path

import open_clip

CONFIG_DIR = Path(__file__).parent / "configs"
TINY_MODEL_NAME = "test-tiny"

_registered = False


def register_model_configs() -> None:
    """Make oodfilter's model configs known to open_clip (idempotent, no I/O beyond the package)."""
    global _registered
    if _registered:
        return
    open_clip.add_model_config(CONFIG_DIR)
    _registered = True
