"""The state a fine-tuning run carries from step to step, and how a run opens it (fresh or resumed)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from oodfilter.device import autocast_dtype
from oodfilter.model.clipn import CLIPN
from oodfilter.train.checkpoint import (
    CHECKPOINT_NAME,
    TrainingState,
    TrainPosition,
    restore_checkpoint,
    save_checkpoint,
)
from oodfilter.train.config import FinetuneConfig
from oodfilter.train.distributed import DistContext, barrier


@dataclass
class TrainingSession:
    """Everything an optimizer step and the loop around it read or advance.

    Attributes:
        config: The run's configuration.
        ctx: This process's place in the process group.
        model: The whole model; only its no-tower trains.
        trainable: The no-tower, wrapped in DDP when there is more than one process.
        state: What checkpoints hold: the no-tower, optimizer, loss scaler and position.
        amp: The autocast dtype, or None for fp32.
        total_steps: Optimizer steps the run does in all.
        work: The folder of the checkpoint and metrics (``<out>/training``).
        last_saved_step: The step of the newest checkpoint (the last good one).
    """

    config: FinetuneConfig
    ctx: DistContext
    model: CLIPN
    trainable: torch.nn.Module
    state: TrainingState
    amp: torch.dtype | None
    total_steps: int
    work: Path
    last_saved_step: int = 0

    @property
    def position(self) -> TrainPosition:
        """Steps done and the position in the data."""
        return self.state.position

    def checkpoint(self) -> None:
        """Save the state (main process), then wait for every process."""
        if self.ctx.is_main:
            save_checkpoint(self.work, self.state)
        barrier(self.ctx)
        self.last_saved_step = self.position.step


def open_session(
    config: FinetuneConfig, ctx: DistContext, model: CLIPN, *, total_steps: int, work: Path
) -> TrainingSession:
    """Put ``model`` in training mode and build the optimizer and scaler; restore them on ``config.resume``.

    Raises:
        InputError: the checkpoint in ``work`` was trained from another base model.
        CheckpointError: the checkpoint in ``work`` is unreadable.
    """
    base_fingerprint = model.text_fingerprint("yes")
    model.train()  # the no-tower's weights require gradients from here on (DDP and AdamW need that)
    tower = model.no_tower
    optimizer = torch.optim.AdamW(param_groups(tower, config.weight_decay), lr=config.lr,
                                  betas=(config.beta1, config.beta2), eps=config.eps)
    amp = autocast_dtype(ctx.device, config.precision)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=amp == torch.float16)
    state = TrainingState(tower, optimizer, scaler, base_fingerprint)
    if config.resume and (work / CHECKPOINT_NAME).is_file():
        restore_checkpoint(work / CHECKPOINT_NAME, state)
    trainable: torch.nn.Module = DistributedDataParallel(tower) if ctx.world > 1 else tower
    return TrainingSession(config, ctx, model, trainable, state, amp, total_steps, work,
                           last_saved_step=state.position.step)


def param_groups(tower: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Split parameters for AdamW: decay every ≥2-d tensor (embeddings included) except norms (docs/method.md §2)."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, parameter in tower.named_parameters():
        exempt = parameter.ndim < 2 or "ln" in name or "norm" in name or name.endswith("bias")
        (no_decay if exempt else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
