"""Training checkpoints: atomic writes, safe loads, exact resume."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from oodfilter.atomic import atomic_write
from oodfilter.errors import CheckpointError

CHECKPOINT_NAME = "last.pt"


@dataclass
class TrainState:
    """Where training stands: optimizer steps done, and the position in the data."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0


def save_checkpoint(
    folder: Path,
    *,
    no_tower: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    state: TrainState,
    base_fingerprint: str,
) -> Path:
    """Write ``folder/last.pt`` atomically (temporary file, then rename) and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    payload = {
        "no_tower": no_tower.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "step": state.step,
        "epoch": state.epoch,
        "batch_in_epoch": state.batch_in_epoch,
        "torch_rng": torch.get_rng_state(),
        "base_fingerprint": base_fingerprint,
    }
    return atomic_write(folder / CHECKPOINT_NAME, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Raises:
        CheckpointError: the file is missing or unreadable.
    """
    if not path.is_file():
        raise CheckpointError(f"no checkpoint to resume at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any failure means the file cannot be trusted
        raise CheckpointError(f"checkpoint {path} is unreadable ({error}); it cannot be resumed") from error
    if not isinstance(payload, dict) or "no_tower" not in payload:
        raise CheckpointError(f"{path} is not an oodfilter training checkpoint")
    return payload
