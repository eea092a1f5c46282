"""Training checkpoints: atomic writes, safe loads, exact resume."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from oodfilter.atomic import atomic_write
from oodfilter.errors import CheckpointError, InputError

CHECKPOINT_NAME = "last.pt"


@dataclass
class TrainPosition:
    """Where training stands: optimizer steps done, and the position in the data."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0


@dataclass
class TrainingState:
    """What a checkpoint holds and a resume restores, with the process's torch random state.

    Attributes:
        no_tower: The trained module (the no-tower, unwrapped).
        optimizer: Its optimizer.
        scaler: The fp16 loss scaler (disabled in other precisions, but saved all the same).
        base_fingerprint: Fingerprint of the frozen yes tower the run started from.
        position: Steps done and the position in the data.
    """

    no_tower: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    base_fingerprint: str
    position: TrainPosition = field(default_factory=TrainPosition)


def save_checkpoint(folder: Path, state: TrainingState) -> Path:
    """Write ``folder/last.pt`` atomically (temporary file, then rename) and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    payload = {
        "no_tower": state.no_tower.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scaler": state.scaler.state_dict(),
        "step": state.position.step,
        "epoch": state.position.epoch,
        "batch_in_epoch": state.position.batch_in_epoch,
        "torch_rng": torch.get_rng_state(),
        "base_fingerprint": state.base_fingerprint,
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


def restore_checkpoint(path: Path, state: TrainingState) -> None:
    """Load ``path`` into ``state`` in place, and restore the torch random state saved with it.

    Raises:
        CheckpointError: the file is missing or unreadable.
        InputError: the checkpoint was trained from another base model than ``state.base_fingerprint``.
    """
    payload = load_checkpoint(path)
    if payload.get("base_fingerprint") != state.base_fingerprint:
        raise InputError(f"{path} was trained from a different base model; resume with the same --model")
    state.no_tower.load_state_dict(payload["no_tower"])
    state.optimizer.load_state_dict(payload["optimizer"])
    state.scaler.load_state_dict(payload["scaler"])
    torch.set_rng_state(payload["torch_rng"])
    state.position = TrainPosition(step=int(payload["step"]), epoch=int(payload["epoch"]),
                                   batch_in_epoch=int(payload["batch_in_epoch"]))
