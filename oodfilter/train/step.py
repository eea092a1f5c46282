"""One optimizer step of the no-tower over the local slice of a global batch (docs/method.md §2)."""

from __future__ import annotations

import math
from typing import Any

import torch

from oodfilter.device import maybe_autocast
from oodfilter.train.config import FinetuneConfig
from oodfilter.train.distributed import DistContext, gather_with_local_grad
from oodfilter.train.losses import LossParts, clipn_loss
from oodfilter.train.session import TrainingSession


def train_step(session: TrainingSession, batch: dict[str, Any]) -> dict[str, float] | None:
    """Set the learning rate for the current step, then take one optimizer step over ``batch``.

    The position is not advanced (the caller does that once every process has a finite loss).

    Returns:
        The loss parts averaged over the gradient-accumulation chunks, and the learning rate used;
        None if a chunk's loss was not finite (the weights are then left as they were).
    """
    config, ctx = session.config, session.ctx
    optimizer, scaler = session.state.optimizer, session.state.scaler
    lr = learning_rate(config, session.position.step, session.total_steps)
    for group in optimizer.param_groups:
        group["lr"] = lr
    images, tokens = batch["image"].to(ctx.device), batch["tokens"].to(ctx.device)
    groups = batch["group"].to(ctx.device)
    choice = prompt_choice(config, ctx, session.position.step, session.model.no_tower.num_prompts + 1)
    optimizer.zero_grad(set_to_none=True)
    chunk = images.shape[0] // config.grad_accum
    totals = {"loss": 0.0, "match": 0.0, "mismatch": 0.0, "tso": 0.0}
    for start in range(0, images.shape[0], chunk):
        part = slice(start, start + chunk)
        loss_parts = _chunk_loss(session, images[part], tokens[part], choice[part], groups[part])
        if not torch.isfinite(loss_parts.total):
            return None
        # × world: DDP averages gradients over processes, and the gathered loss is the global one.
        scaler.scale(loss_parts.total * ctx.world / config.grad_accum).backward()
        for key, value in zip(totals, loss_parts, strict=True):
            totals[key] += float(value.detach()) / config.grad_accum
    if config.grad_clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(session.model.no_tower.parameters(), config.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    totals["lr"] = optimizer.param_groups[0]["lr"]
    return totals


def _chunk_loss(
    session: TrainingSession, images: torch.Tensor, tokens: torch.Tensor, choice: torch.Tensor, groups: torch.Tensor
) -> LossParts:
    """Return the loss over the global batch of this chunk, with gradients for this process's slice."""
    model, ctx = session.model, session.ctx
    with maybe_autocast(ctx.device, session.amp):
        with torch.no_grad():
            f = model.encode_image(images)  # (b, D)
            g = model.encode_text(tokens)  # (b, D)
        g_no = session.trainable(tokens, choice)  # (b, D)
    return clipn_loss(
        gather_with_local_grad(f.float(), ctx),
        gather_with_local_grad(g.float(), ctx),
        gather_with_local_grad(g_no.float(), ctx),
        model.logit_scale,
        groups=gather_with_local_grad(groups, ctx),
    )


def prompt_choice(config: FinetuneConfig, ctx: DistContext, step: int, options: int) -> torch.Tensor:
    """Return the prompt option (0 … options − 1) of each sample of this process's slice, on its device.

    Drawn for the *global* batch from (seed, step), so the choices are the same on one device or
    many, and on resume.
    """
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
    global_choice = torch.randint(0, options, (config.batch_size,), generator=generator)
    local = config.batch_size // ctx.world
    return global_choice[ctx.rank * local : (ctx.rank + 1) * local].to(ctx.device)


def learning_rate(config: FinetuneConfig, step: int, total_steps: int) -> float:
    """Cosine decay from ``config.lr`` to 0 over ``total_steps``, after an optional linear warm-up."""
    if config.warmup_steps and step < config.warmup_steps:
        factor = (step + 1) / config.warmup_steps
    else:
        progress = (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps)
        factor = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return config.lr * factor
