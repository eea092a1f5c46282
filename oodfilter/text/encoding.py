"""Encoding captions: sorted by token length, in batches cut to their longest caption, with progress and an estimate.

A tokenizer pads every caption to the text tower's context (77 positions for CLIP), though a class
caption uses 5 to 20 of them. Each tower says how many positions each caption needs for its exact
vector (:meth:`~oodfilter.model.clipn.CLIPN.token_lengths`); the captions are sorted by that length,
longest first, and each batch is encoded cut to its longest caption. The vectors are those of the full
context (to float rounding), in the caller's order. A tower that needs every position (see
:mod:`oodfilter.model.text_cut`) is encoded at the full context, in the caller's order.

Before the bulk of the work, the first batch (at most 256 captions) is timed and the whole encode estimated
from it, in token positions: logged, and passed to the ``announce`` hook (:mod:`oodfilter.encode_progress`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from oodfilter.device import inference_precision, maybe_autocast, precision_dtype
from oodfilter.encode_progress import EncodeHooks, EncodeProgress, as_hooks
from oodfilter.model.clipn import CLIPN

logger = logging.getLogger(__name__)

# At most this many captions in the first batch, which is timed for the estimate: a batch of the usual size
# (smaller ones run slower per caption on a CPU), capped so that the estimate comes early with large batches.
CALIBRATION_CAPTIONS = 256
# Captions tokenized per tokenizer call while planning.
_TOKENIZE_CHUNK = 4096


def text_precision(device: torch.device, precision: str) -> str:
    """Return the precision text is encoded in when scoring in ``precision`` on ``device``.

    Scoring's rules (:func:`oodfilter.device.inference_precision`), except that ``int8`` (an image-tower
    setting) encodes text in fp32.
    """
    return "fp32" if precision == "int8" else inference_precision(device, precision, warn=False)


class EncodePlan:
    """The batches in which one tower encodes a list of captions.

    The captions are tokenized once (on the CPU) and ordered by the token positions they need, longest
    first; each batch holds up to ``batch_size`` captions (the first up to ``first_batch``) and is cut to
    its longest caption. Without lengths from the tower, the batches keep the caller's order at the full
    context.

    Args:
        model: The model whose ``tower`` encodes.
        tower: ``yes`` or ``no``.
        captions: The captions, in the caller's order.
        batch_size: Captions per encoder call.
        first_batch: At most this many captions in the first batch (default ``batch_size``).
        tokens: The captions' token ids (N, L) on the CPU, if already tokenized (the other tower's plan).

    """

    def __init__(
        self, model: CLIPN, tower: str, captions: Sequence[str], batch_size: int, first_batch: int | None = None,
        tokens: torch.Tensor | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        self.model = model
        self.tower = tower
        self.captions = captions
        if tokens is None:
            chunks = [model.tokenize(captions[start : start + _TOKENIZE_CHUNK], device="cpu")
                      for start in range(0, len(captions), _TOKENIZE_CHUNK)]
            tokens = torch.cat(chunks) if chunks else torch.zeros(0, 0, dtype=torch.long)  # (N, L)
        lengths = model.token_lengths(tokens, tower) if len(captions) else None
        self.cut = lengths is not None
        if lengths is None:
            order = torch.arange(len(captions))
            needed = torch.full((len(captions),), tokens.shape[-1], dtype=torch.long)
        else:
            order = torch.argsort(lengths, descending=True, stable=True)
            needed = lengths[order]
        self.tokens = tokens.to(torch.int32)  # half the memory of int64 ids, for every caption of a large build
        self.batches: list[tuple[torch.Tensor, int]] = []  # (caption indices, token positions)
        start, size = 0, min(batch_size, first_batch or batch_size)
        while start < len(captions):
            indices = order[start : start + size]
            self.batches.append((indices, int(needed[start : start + size].max())))
            start, size = start + size, batch_size

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def positions(self) -> int:
        """Token positions the batches encode, summed (the cost the estimate scales with)."""
        return sum(len(indices) * width for indices, width in self.batches)

    @torch.no_grad()
    def run(self, dtype: torch.dtype | None, step: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Encode every batch → (N, D) float32, L2-normalised, in the caller's order.

        Args:
            dtype: Autocast dtype (None: none).
            step: Called after each batch as ``step(captions done, token positions done)``.

        """
        model = self.model
        vectors = torch.zeros(len(self), model.embed_dim)
        done = positions = 0
        for indices, width in self.batches:
            tokens = self.tokens[indices, :width].to(model.device, torch.long)  # (b, width)
            with maybe_autocast(model.device, dtype):
                encoded = model.encode(tokens, self.tower)
            vectors[indices] = F.normalize(encoded.float(), dim=-1).cpu()
            done, positions = done + len(indices), positions + len(indices) * width
            if step is not None:
                step(done, positions)
        return vectors.numpy()


def encode_captions(
    model: CLIPN,
    tower: str,
    captions: Sequence[str],
    batch_size: int = 256,
    *,
    precision: str = "auto",
    progress: EncodeProgress | None = None,
) -> np.ndarray:
    """Encode captions with the ``yes`` or ``no`` tower in batches → (N, D) float32, L2-normalised.

    Batches are cut to their longest caption where the tower allows it (the vectors are those of the full
    context, in the caller's order; see the module docstring). ``precision`` (``auto``, ``fp32``, ``bf16``,
    ``fp16``) is resolved by :func:`text_precision`. ``progress``: an ``advance(done, total)`` callback or
    :class:`~oodfilter.encode_progress.EncodeHooks` (default: those installed by
    :func:`~oodfilter.encode_progress.reporting_encodes`, if any).
    """
    return encode_caption_sets(model, [(tower, captions)], batch_size, precision=precision, progress=progress)[0]


def encode_caption_sets(
    model: CLIPN,
    jobs: Sequence[tuple[str, Sequence[str]]],
    batch_size: int = 256,
    *,
    precision: str = "auto",
    progress: EncodeProgress | None = None,
    on_encoded: Callable[[int, np.ndarray], None] | None = None,
) -> list[np.ndarray]:
    """Encode several (tower, captions) lists as one piece of work: one count, one estimate.

    Returns one (N, D) float32 array per job, as :func:`encode_captions` would. ``on_encoded(index,
    vectors)`` is called as soon as each job is done (to cache its vectors before the next job starts).
    """
    hooks = as_hooks(progress)
    dtype = precision_dtype(text_precision(model.device, precision))
    plans: list[EncodePlan] = []
    for tower, captions in jobs:
        # the towers share a tokenizer: the same captions (a cold build's two towers) are tokenized once
        same = next((plan.tokens for plan in plans if list(plan.captions) == list(captions)), None)
        plans.append(EncodePlan(model, tower, captions, batch_size, first_batch=None if plans else CALIBRATION_CAPTIONS,
                                tokens=same))
    total = sum(len(plan) for plan in plans)
    if not total:
        return [np.zeros((0, model.embed_dim), np.float32) for _ in plans]
    was_training = model.training
    model.eval()
    try:
        return _run(plans, dtype, hooks, total, on_encoded)
    finally:
        model.train(was_training)


def _run(plans: list[EncodePlan], dtype: torch.dtype | None, hooks: EncodeHooks, total: int,
         on_encoded: Callable[[int, np.ndarray], None] | None) -> list[np.ndarray]:
    all_positions = sum(plan.positions for plan in plans)
    offset = 0
    start = time.perf_counter()
    announced = False

    def step(done: int, positions: int) -> None:
        nonlocal announced
        if not announced:  # the first batch has been timed
            announced = True
            seconds = (time.perf_counter() - start) * all_positions / max(1, positions)
            message = f"{_what(plans)}, about {_duration(seconds)}"
            logger.info(message)
            if hooks.announce is not None:
                hooks.announce(message)
        if hooks.advance is not None:
            hooks.advance(offset + done, total)

    if hooks.advance is not None:
        hooks.advance(0, total)
    results = []
    for index, plan in enumerate(plans):
        results.append(plan.run(dtype, step))
        offset += len(plan)
        if on_encoded is not None:
            on_encoded(index, results[-1])
    logger.debug("encoded %d captions in %.1f s (%s)", total, time.perf_counter() - start,
                 ", ".join(f"{plan.tower}: {'cut' if plan.cut else 'full context'}" for plan in plans))
    return results


def _what(plans: list[EncodePlan]) -> str:
    counts: dict[str, int] = {}
    for plan in plans:
        if len(plan):
            counts[plan.tower] = counts.get(plan.tower, 0) + len(plan)
    if len(set(counts.values())) == 1:
        towers = " and ".join(counts) + (" towers" if len(counts) > 1 else " tower")
        return f"encoding {next(iter(counts.values()))} captions with the {towers}"
    return "encoding " + " and ".join(f"{count} captions with the {tower} tower" for tower, count in counts.items())


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"
