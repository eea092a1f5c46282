"""The fine-tuning loop: only the no-tower and its prompts train (METHOD.md §2).

Works on one device and under ``torchrun`` (DDP): features are gathered across ranks so the N×N loss
covers the global batch, with gradients kept for the local slice; the loss is scaled by the world size
before ``backward`` so that DDP's gradient averaging gives the gradient of the global loss.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torchvision import transforms

from oodfilter.device import autocast_dtype, maybe_autocast, resolve_device
from oodfilter.errors import InputError, OODFilterError
from oodfilter.model.bundle import write_bundle_into
from oodfilter.model.clipn import CLIPN
from oodfilter.model.loading import load_model
from oodfilter.text.templates import resolve_templates
from oodfilter.train.checkpoint import CHECKPOINT_NAME, TrainState, load_checkpoint, save_checkpoint
from oodfilter.train.config import FinetuneConfig
from oodfilter.train.data import (
    CaptionDataset,
    DataCounters,
    GlobalBatchSampler,
    collate_pairs,
    read_caption_source,
    split_pairs,
)
from oodfilter.train.distributed import (
    DistContext,
    all_true,
    barrier,
    gather_with_local_grad,
    init_distributed,
    shutdown,
)
from oodfilter.train.losses import clipn_loss
from oodfilter.train.validate import validate

logger = logging.getLogger(__name__)

TRAINING_DIR = "training"
METRICS_FILE = "metrics.jsonl"
Progress = Callable[[int, int, str], None]


class TrainingDivergedError(OODFilterError):
    """The loss became NaN or infinite; training stopped and the last good checkpoint was kept."""


@dataclass
class FinetuneResult:
    """What a run produced: the bundle folder, the steps done and the last metrics."""

    bundle: Path
    steps: int
    metrics: dict[str, float] = field(default_factory=dict)
    data: DataCounters = field(default_factory=DataCounters)


def finetune(config: FinetuneConfig, *, progress: Progress | None = None, model: CLIPN | None = None) -> FinetuneResult:
    """Train the no-branch as configured and write a bundle to ``config.out``.

    Args:
        config: The run's configuration.
        progress: Called as ``progress(step, total_steps, text)`` after each step (main process only).
        model: A loaded model to train instead of loading ``config.model`` (library callers, tests).

    Raises:
        InputError: bad data or options, or an output folder in use without ``resume``.
        TrainingDivergedError: the loss became NaN or infinite.
    """
    config.validate()
    context = init_distributed(resolve_device(config.device))
    try:
        return _run(config, context, progress, model)
    finally:
        shutdown(context)


def _run(config: FinetuneConfig, ctx: DistContext, progress: Progress | None, given: CLIPN | None) -> FinetuneResult:
    out = Path(config.out)
    work = out / TRAINING_DIR
    _check_out_folder(config, out, work)
    torch.manual_seed(config.seed)
    model = (given if given is not None else load_model(config.model, config.pretrained, device=ctx.device)).to(
        ctx.device
    )
    base_fingerprint = model.text_fingerprint("yes")
    templates = resolve_templates(config.templates)
    train_pairs, val_pairs = split_pairs(read_caption_source(config.data), config.val_fraction)
    if len(train_pairs) < config.batch_size:
        raise InputError(f"{len(train_pairs)} training pairs are fewer than one batch ({config.batch_size})")
    train_set = CaptionDataset(train_pairs, _train_transform(model), model.tokenizer, templates, seed=config.seed)
    val_set = CaptionDataset(val_pairs[: config.val_max], _eval_transform(model), model.tokenizer, templates,
                             seed=config.seed)
    steps_per_epoch = len(train_set) // config.batch_size
    total_steps = config.steps if config.steps is not None else int(config.epochs or 1) * steps_per_epoch

    model.train()  # the no-tower's weights require gradients from here on (DDP and AdamW need that)
    tower = model.no_tower
    optimizer = torch.optim.AdamW(_param_groups(tower, config.weight_decay), lr=config.lr,
                                  betas=(config.beta1, config.beta2), eps=config.eps)
    amp = autocast_dtype(ctx.device, config.precision)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=amp == torch.float16)
    state = TrainState()
    if config.resume and (work / CHECKPOINT_NAME).is_file():
        state = _restore(work / CHECKPOINT_NAME, tower, optimizer, scaler, base_fingerprint)
    trainable: torch.nn.Module = DistributedDataParallel(tower) if ctx.world > 1 else tower

    counters = DataCounters()
    metrics: dict[str, float] = {}
    log = _MetricsLog(work / METRICS_FILE, enabled=ctx.is_main)
    if ctx.is_main and state.step == 0 and val_set.pairs:
        metrics.update(validate(model, val_set, batch_size=min(config.batch_size, 64), device=ctx.device))
        log.write({"step": 0, **metrics})
    last_good = state.step
    started, samples = time.perf_counter(), 0
    while state.step < total_steps:
        train_set.set_epoch(state.epoch)
        sampler = GlobalBatchSampler(len(train_set), config.batch_size, seed=config.seed, epoch=state.epoch,
                                     rank=ctx.rank, world=ctx.world, start_batch=state.batch_in_epoch)
        loader = DataLoader(train_set, batch_sampler=sampler, num_workers=config.workers, collate_fn=collate_pairs,
                            pin_memory=ctx.device.type == "cuda")
        for batch in loader:
            counters.truncated += batch["truncated"]
            counters.skipped += len(batch["skipped"])
            counters.skipped_paths.extend(batch["skipped"][:20])
            parts = _train_step(model, trainable, optimizer, scaler, batch, config, ctx, amp, state.step, total_steps)
            finite_everywhere = all_true(parts is not None, ctx)
            if parts is None or not finite_everywhere:
                raise TrainingDivergedError(
                    f"the loss became NaN or infinite at step {state.step + 1}; training stopped. The last good "
                    f"checkpoint (step {last_good}) is in {work}. Lower --lr, set --grad-clip, or use "
                    "--precision fp32, then --resume."
                )
            state.step += 1
            state.batch_in_epoch += 1
            samples += config.batch_size
            metrics.update(parts)
            if ctx.is_main:
                rate = samples / max(time.perf_counter() - started, 1e-9)
                if state.step % config.log_every == 0 or state.step == total_steps:
                    log.write({"step": state.step, **parts, "samples_per_s": rate})
                if progress is not None:
                    progress(state.step, total_steps, f"loss {parts['loss']:.4f}, {rate:.0f} samples/s")
            if config.val_every and state.step % config.val_every == 0 and ctx.is_main and val_set.pairs:
                metrics.update(validate(model, val_set, batch_size=min(config.batch_size, 64), device=ctx.device))
                log.write({"step": state.step, **{k: v for k, v in metrics.items() if k.startswith("val_")}})
            if config.checkpoint_every and state.step % config.checkpoint_every == 0:
                _checkpoint(work, tower, optimizer, scaler, state, base_fingerprint, ctx)
                last_good = state.step
            if state.step >= total_steps:
                break
        else:
            state.epoch += 1
            state.batch_in_epoch = 0
    _checkpoint(work, tower, optimizer, scaler, state, base_fingerprint, ctx)
    if ctx.is_main:
        if val_set.pairs and not (config.val_every and state.step % config.val_every == 0):
            metrics.update(validate(model, val_set, batch_size=min(config.batch_size, 64), device=ctx.device))
            log.write({"step": state.step, **{k: v for k, v in metrics.items() if k.startswith("val_")}})
        model.no_branch_trained = True
        training = {**config.to_dict(), "steps_done": state.step, "skipped_images": counters.skipped,
                    "truncated_captions": counters.truncated}
        write_bundle_into(model.eval(), out, training_config=training)
        if counters.skipped:
            logger.warning("skipped %d undecodable images (e.g. %s)", counters.skipped, counters.skipped_paths[:3])
        if counters.truncated:
            logger.info("%d captions were longer than the context and were truncated", counters.truncated)
    barrier(ctx)
    return FinetuneResult(bundle=out, steps=state.step, metrics=metrics, data=counters)


def _check_out_folder(config: FinetuneConfig, out: Path, work: Path) -> None:
    if config.resume:
        if not (work / CHECKPOINT_NAME).is_file():
            raise InputError(f"nothing to resume in {out}: {work / CHECKPOINT_NAME} does not exist")
        return
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} already exists and is not empty: pass --resume to continue a run there, "
                         "or choose a new --out")


def _train_step(
    model: CLIPN,
    trainable: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    batch: dict[str, Any],
    config: FinetuneConfig,
    ctx: DistContext,
    amp: torch.dtype | None,
    step: int,
    total_steps: int,
) -> dict[str, float] | None:
    """One optimizer step over the local slice of a global batch; None if the loss was not finite."""
    _set_lr(optimizer, config, step, total_steps)
    images, tokens = batch["image"].to(ctx.device), batch["tokens"].to(ctx.device)
    groups = batch["group"].to(ctx.device)
    # Prompt option per sample, drawn for the *global* batch from (seed, step): the same choices on one
    # device or many, and on resume.
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
    options = model.no_tower.num_prompts + 1
    global_choice = torch.randint(0, options, (config.batch_size,), generator=generator)
    local = config.batch_size // ctx.world
    choice = global_choice[ctx.rank * local : (ctx.rank + 1) * local].to(ctx.device)
    optimizer.zero_grad(set_to_none=True)
    chunk = images.shape[0] // config.grad_accum
    totals = {"loss": 0.0, "match": 0.0, "mismatch": 0.0, "tso": 0.0}
    for start in range(0, images.shape[0], chunk):
        part = slice(start, start + chunk)
        with maybe_autocast(ctx.device, amp):
            with torch.no_grad():
                f = model.encode_image(images[part])
                g = model.encode_text(tokens[part])
            g_no = trainable(tokens[part], choice[part])
        loss_parts = clipn_loss(
            gather_with_local_grad(f.float(), ctx),
            gather_with_local_grad(g.float(), ctx),
            gather_with_local_grad(g_no.float(), ctx),
            model.logit_scale,
            groups=gather_with_local_grad(groups[part], ctx),
        )
        if not torch.isfinite(loss_parts.total):
            return None
        scaler.scale(loss_parts.total * ctx.world / config.grad_accum).backward()
        for key, value in zip(totals, loss_parts, strict=True):
            totals[key] += float(value.detach()) / config.grad_accum
    if config.grad_clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.no_tower.parameters(), config.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    totals["lr"] = optimizer.param_groups[0]["lr"]
    return totals


def _set_lr(optimizer: torch.optim.Optimizer, config: FinetuneConfig, step: int, total: int) -> None:
    """Cosine decay from ``config.lr`` to 0 over ``total`` steps, after an optional linear warm-up."""
    if config.warmup_steps and step < config.warmup_steps:
        factor = (step + 1) / config.warmup_steps
    else:
        progress = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
        factor = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    for group in optimizer.param_groups:
        group["lr"] = config.lr * factor


def _param_groups(tower: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on ≥2-d tensors except norms, biases and embeddings of positions (METHOD.md §2)."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, parameter in tower.named_parameters():
        exempt = parameter.ndim < 2 or "ln" in name or "norm" in name or name.endswith("bias")
        (no_decay if exempt else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _restore(
    path: Path, tower: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
    base_fingerprint: str,
) -> TrainState:
    payload = load_checkpoint(path)
    if payload.get("base_fingerprint") != base_fingerprint:
        raise InputError(f"{path} was trained from a different base model; resume with the same --model")
    tower.load_state_dict(payload["no_tower"])
    optimizer.load_state_dict(payload["optimizer"])
    scaler.load_state_dict(payload["scaler"])
    torch.set_rng_state(payload["torch_rng"])
    return TrainState(step=int(payload["step"]), epoch=int(payload["epoch"]),
                      batch_in_epoch=int(payload["batch_in_epoch"]))


def _checkpoint(
    work: Path, tower: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
    state: TrainState, base_fingerprint: str, ctx: DistContext,
) -> None:
    if ctx.is_main:
        save_checkpoint(work, no_tower=tower, optimizer=optimizer, scaler=scaler, state=state,
                        base_fingerprint=base_fingerprint)
    barrier(ctx)


def _train_transform(model: CLIPN) -> Callable[[Any], torch.Tensor]:
    """RandomResizedCrop(scale 0.9–1.0, bicubic) + the model's normalisation (the reference recipe)."""
    cfg = open_clip.get_model_preprocess_cfg(model.clip)
    mean = cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)
    std = cfg.get("std", open_clip.OPENAI_DATASET_STD)
    return transforms.Compose([
        transforms.RandomResizedCrop(model.image_size, scale=(0.9, 1.0),
                                     interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])


def _eval_transform(model: CLIPN) -> Callable[[Any], torch.Tensor]:
    if model.preprocess is None:
        raise InputError("the model has no image transform")
    return model.preprocess


class _MetricsLog:
    """Append-only JSONL of training and validation metrics (for plotting)."""

    def __init__(self, path: Path, *, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")


