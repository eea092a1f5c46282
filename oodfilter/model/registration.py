"""Registration of oodfilter's own open_clip model configs (``test-tiny``, ``test-tiny-hf``)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import open_clip

from oodfilter.model.names import TINY_HF_MODEL_NAME, TINY_MODEL_NAME

CONFIG_DIR = Path(__file__).parent / "configs"
# A 2-layer, width-32 BERT config and a ~170-entry WordPiece vocabulary (characters, word pieces and the
# words of the prompt templates): the Hugging Face text tower of test-tiny-hf, built offline.
TINY_HF_TEXT_DIR = Path(__file__).parent / "tiny_hf_text"
TINY_HF_CONTEXT_LENGTH = 32

_registered = False


def register_model_configs() -> None:
    """Make oodfilter's model configs known to open_clip (idempotent; reads the package, writes a temp file)."""
    global _registered
    if _registered:
        return
    open_clip.add_model_config(CONFIG_DIR)
    _register_config(TINY_HF_MODEL_NAME, tiny_hf_config())
    _registered = True


def tiny_hf_config() -> dict[str, Any]:
    """Return the open_clip config of ``test-tiny-hf``: test-tiny's image tower, the tiny BERT as text tower."""
    config: dict[str, Any] = json.loads((CONFIG_DIR / f"{TINY_MODEL_NAME}.json").read_text())
    config["text_cfg"] = {
        "hf_model_name": str(TINY_HF_TEXT_DIR),
        "hf_tokenizer_name": str(TINY_HF_TEXT_DIR),
        "hf_model_pretrained": False,
        "hf_pooler_type": "mean_pooler",
        "hf_proj_type": "mlp",
        "context_length": TINY_HF_CONTEXT_LENGTH,
    }
    return config


def _register_config(name: str, config: dict[str, Any]) -> None:
    """Register ``config`` as open_clip model ``name``.

    open_clip registers configs from JSON files only, and this one names a folder inside the installed
    package, so it is written to a temporary file; open_clip keeps what it read after the file is gone.
    """
    with tempfile.TemporaryDirectory(prefix="oodfilter-configs-") as folder:
        path = Path(folder) / f"{name}.json"
        path.write_text(json.dumps(config))
        open_clip.add_model_config(path)
