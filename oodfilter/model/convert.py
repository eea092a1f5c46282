"""Conversion of the reference CLIPN release checkpoints (docs/method.md §4) to oodfilter models."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from oodfilter.errors import CheckpointError
from oodfilter.model.build import build_from_open_clip
from oodfilter.model.bundle import save_bundle
from oodfilter.model.clipn import CLIPN, ModelSource
from oodfilter.model.file_checks import check_bundle_destination, check_checkpoint_file
from oodfilter.model.fingerprint import file_sha256
from oodfilter.model.state import load_state_strict

# First key component of a no-tower tensor in the reference layout → our NoTextTower's name.
_NO_TOWER_PREFIXES = {
    "token_embedding_no": "token_embedding",
    "positional_embedding_no": "positional_embedding",
    "transformer_no": "transformer",
    "ln_final_no": "ln_final",
    "text_projection_no": "text_projection",
}
_PROMPT_KEY = "prompt_no"
# Non-persistent buffers some exports include; they are rebuilt from the config.
_IGNORED_KEYS = {"attn_mask", "attn_mask_no"}


def split_reference_state(
    state: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split a reference CLIPN state dict into (yes-model state, no-tower state).

    Strips the DataParallel ``module.`` prefix, maps ``*_no`` keys and ``prompt_no`` onto
    :class:`~oodfilter.model.no_tower.NoTextTower` names, and drops rebuilt buffers.
    """
    yes: dict[str, torch.Tensor] = {}
    no: dict[str, torch.Tensor] = {}
    for raw_key, value in state.items():
        key = raw_key.removeprefix("module.")
        head, _, rest = key.partition(".")
        if key in _IGNORED_KEYS:
            continue
        if key == _PROMPT_KEY:
            no["prompts"] = value
        elif head in _NO_TOWER_PREFIXES:
            no[_NO_TOWER_PREFIXES[head] + (f".{rest}" if rest else "")] = value
        else:
            yes[key] = value
    return yes, no


def read_reference_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a reference checkpoint with ``weights_only=True`` and return its dict.

    Raises:
        CheckpointError: the file is missing, unreadable, not a torch checkpoint, holds non-tensor
            objects that a safe load refuses, or has no state dict.

    """
    file = check_checkpoint_file(path)
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds on garbage input; all mean "not loadable"
        raise CheckpointError(
            f"{file} is not a readable PyTorch checkpoint ({type(error).__name__}: {error}). "
            "Check the download is complete; only tensor checkpoints load (weights_only=True)."
        ) from error
    if isinstance(payload, Mapping) and isinstance(payload.get("state_dict"), Mapping):
        return dict(payload)
    if isinstance(payload, Mapping) and payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        return {"state_dict": dict(payload)}
    raise CheckpointError(f"{file} holds no CLIPN state dict (expected a dict with a 'state_dict' entry)")


def load_reference_checkpoint(path: str | Path, *, architecture: str = "ViT-B-16") -> CLIPN:
    """Build a CLIPN from a reference release checkpoint, strictly (every key must match).

    Args:
        path: The ``.pt`` file of the reference release.
        architecture: The open_clip architecture it was trained with (the release used ViT-B-16).

    Raises:
        CheckpointError: unreadable file, or keys/shapes that do not match ``architecture`` (listed).

    """
    payload = read_reference_checkpoint(path)
    yes_state, no_state = split_reference_state(payload["state_dict"])
    if "prompts" not in no_state:
        raise CheckpointError(f"{path} has no '{_PROMPT_KEY}' tensor: it is not a CLIPN checkpoint")
    num_prompts = int(no_state["prompts"].shape[0])
    details = {"file": Path(path).name, "sha256": file_sha256(path), "epoch": payload.get("epoch")}
    model = build_from_open_clip(
        architecture,
        num_prompts=num_prompts,
        source=ModelSource(name=architecture, kind="reference-checkpoint", details=details),
    )
    load_state_strict(model.clip, yes_state, what=f"{path} (yes-model, architecture {architecture})")
    load_state_strict(model.no_tower, no_state, what=f"{path} (no-tower, architecture {architecture})")
    model.no_branch_trained = True
    return model.eval()


def convert_reference_checkpoint(
    checkpoint: str | Path, out_dir: str | Path, *, architecture: str = "ViT-B-16", overwrite: bool = False
) -> Path:
    """Convert a reference CLIPN checkpoint into a bundle folder and return its path.

    The destination is checked before the (large) checkpoint is read: ``overwrite`` replaces only a
    folder holding a bundle (see :func:`~oodfilter.model.file_checks.check_bundle_destination`).

    Args:
        checkpoint: The ``.pt`` file of the reference release.
        out_dir: The bundle folder to write.
        architecture: The open_clip architecture the checkpoint was trained with.
        overwrite: Replace an existing bundle at ``out_dir``.

    Raises:
        InputError: ``out_dir`` is a file, a folder that is not only a bundle, or a bundle while
            ``overwrite`` is False.
        CheckpointError: the checkpoint is unreadable or does not match ``architecture``.

    """
    out = Path(out_dir)
    check_bundle_destination(out, overwrite=overwrite)
    model = load_reference_checkpoint(checkpoint, architecture=architecture)
    return save_bundle(model, out, overwrite=overwrite)
