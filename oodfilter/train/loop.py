"""The fine-tuning loop: only the no-tower and its prompts train (docs/method.md §2).

Works on one device and under ``torchrun`` (DDP): features are gathered across ranks so the N×N loss
covers the global batch, with gradients kept for the local slice; the loss is scaled by the world size
before ``backward`` so that DDP's gradient averaging gives the gradient of the global loss.

A run does, in order: validate at step 0 (a fresh run); then for each step: train, log, validate
(every ``val_every``), checkpoint (every ``checkpoint_every``); then checkpoint, validate (unless that
step was just validated) and write the bundle. :func:`_at` is the one place that validates and saves.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch
from torch.utils.data import DataLoader
from torchvision import transforms

from oodfilter.device import resolve_device
from oodfilter.errors import InputError, OODFilterError
from oodfilter.model.bundle import write_bundle_into
from oodfilter.model.clipn import CLIPN
from oodfilter.model.factory import load_model
from oodfilter.text.templates import resolve_templates
from oodfilter.train.checkpoint import CHECKPOINT_NAME
from oodfilter.train.config import FinetuneConfig
from oodfilter.train.data import (
    CaptionDataset,
    DataCounters,
    GlobalBatchSampler,
    collate_pairs,
    read_caption_source,
    split_pairs,
)
from oodfilter.train.distributed import DistContext, all_true, barrier, init_distributed, shutdown
from oodfilter.train.report import METRICS_FILE, MetricsLog, Progress, TrainingReport
from oodfilter.train.session import TrainingSession, open_session
from oodfilter.train.step import train_step
from oodfilter.train.validate import validate

logger = logging.getLogger(__name__)

TRAINING_DIR = "training"


class TrainingDivergedError(OODFilterError):
    """The loss became NaN or infinite; training stopped and the last good checkpoint was kept."""


@dataclass
class FinetuneResult:
    """What a run produced: the bundle folder, the steps done and the last metrics."""

    bundle: Path
    steps: int
    metrics: dict[str, float] = field(default_factory=dict)
    data: DataCounters = field(default_factory=DataCounters)


class _Moment(enum.Enum):
    """The points of a run where validation and checkpoints may happen."""

    START = "start"
    STEP = "step"
    END = "end"


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
    train_set, val_set = _datasets(config, model)
    steps_per_epoch = len(train_set) // config.batch_size
    total_steps = config.steps if config.steps is not None else int(config.epochs or 1) * steps_per_epoch
    session = open_session(config, ctx, model, total_steps=total_steps, work=work)
    report = TrainingReport(MetricsLog(work / METRICS_FILE, enabled=ctx.is_main),
                            progress=progress if ctx.is_main else None, log_every=config.log_every)
    _train(session, train_set, val_set, report)
    if ctx.is_main:
        _write_bundle(session, out, report.counters)
    barrier(ctx)
    return FinetuneResult(bundle=out, steps=session.position.step, metrics=report.metrics, data=report.counters)


def _check_out_folder(config: FinetuneConfig, out: Path, work: Path) -> None:
    if config.resume:
        if not (work / CHECKPOINT_NAME).is_file():
            raise InputError(f"nothing to resume in {out}: {work / CHECKPOINT_NAME} does not exist")
        return
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} already exists and is not empty: pass --resume to continue a run there, "
                         "or choose a new --out")


def _datasets(config: FinetuneConfig, model: CLIPN) -> tuple[CaptionDataset, CaptionDataset]:
    """Return the training pairs (augmented) and at most ``val_max`` held-out pairs (the model's transform)."""
    templates = resolve_templates(config.templates)
    train_pairs, val_pairs = split_pairs(read_caption_source(config.data), config.val_fraction)
    if len(train_pairs) < config.batch_size:
        raise InputError(f"{len(train_pairs)} training pairs are fewer than one batch ({config.batch_size})")
    train_set = CaptionDataset(train_pairs, _train_transform(model), model.tokenizer, templates, seed=config.seed)
    val_set = CaptionDataset(val_pairs[: config.val_max], _eval_transform(model), model.tokenizer, templates,
                             seed=config.seed)
    return train_set, val_set


def _train(session: TrainingSession, train_set: CaptionDataset, val_set: CaptionDataset,
           report: TrainingReport) -> None:
    """Step until ``session.total_steps``, epoch after epoch, from the session's position in the data."""
    config, ctx, position = session.config, session.ctx, session.position
    _at(_Moment.START, session, val_set, report)
    report.start_clock()
    sampler = GlobalBatchSampler(len(train_set), config.batch_size, seed=config.seed, rank=ctx.rank, world=ctx.world)
    loader = DataLoader(train_set, batch_sampler=sampler, num_workers=config.workers, collate_fn=collate_pairs,
                        pin_memory=ctx.device.type == "cuda")
    while position.step < session.total_steps:
        train_set.set_epoch(position.epoch)
        sampler.set_epoch(position.epoch, start_batch=position.batch_in_epoch)
        for batch in loader:
            report.count_batch(batch)
            parts = _finite_step(session, batch)
            position.step += 1
            position.batch_in_epoch += 1
            report.record_step(position.step, session.total_steps, parts, config.batch_size)
            _at(_Moment.STEP, session, val_set, report)
            if position.step >= session.total_steps:
                break
        else:
            position.epoch += 1
            position.batch_in_epoch = 0
    _at(_Moment.END, session, val_set, report)


def _finite_step(session: TrainingSession, batch: dict[str, Any]) -> dict[str, float]:
    """:func:`train_step`, stopping every process when the loss was not finite on any of them."""
    parts = train_step(session, batch)
    finite_everywhere = all_true(parts is not None, session.ctx)  # on every process, so that all stop together
    if parts is None or not finite_everywhere:
        raise TrainingDivergedError(
            f"the loss became NaN or infinite at step {session.position.step + 1}; training stopped. The last "
            f"good checkpoint (step {session.last_saved_step}) is in {session.work}. Lower --lr, set --grad-clip, "
            "or use --precision fp32, then --resume."
        )
    return parts


def _at(moment: _Moment, session: TrainingSession, val_set: CaptionDataset, report: TrainingReport) -> None:
    """Checkpoint and validate as due at ``moment``: the only place that does either.

    After a step, validation comes before the checkpoint, so that the checkpoint's random state is the one
    the next step starts from; at the end, the checkpoint comes first, so a failing validation loses nothing.
    """
    config, ctx, step = session.config, session.ctx, session.position.step
    validated_now = bool(config.val_every) and step % config.val_every == 0
    if moment is _Moment.END:
        session.checkpoint()
    due = {_Moment.START: step == 0, _Moment.STEP: validated_now, _Moment.END: not validated_now}[moment]
    if due and ctx.is_main and val_set.pairs:
        report.record_validation(step, validate(session.model, val_set, batch_size=min(config.batch_size, 64),
                                                device=ctx.device))
    if moment is _Moment.STEP and config.checkpoint_every and step % config.checkpoint_every == 0:
        session.checkpoint()


def _write_bundle(session: TrainingSession, out: Path, counters: DataCounters) -> None:
    """Write the trained model as a bundle into ``out``, with the run's configuration and data counters."""
    model = session.model
    model.no_branch_trained = True
    training = {**session.config.to_dict(), "steps_done": session.position.step, "skipped_images": counters.skipped,
                "truncated_captions": counters.truncated}
    write_bundle_into(model.eval(), out, training_config=training)
    if counters.skipped:
        logger.warning("skipped %d undecodable images (e.g. %s)", counters.skipped, counters.skipped_paths[:3])
    if counters.truncated:
        logger.info("%d captions were longer than the context and were truncated", counters.truncated)


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
    return model.preprocess
