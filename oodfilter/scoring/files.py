"""Scoring image files: decode in DataLoader workers, score each batch, one manifest row per file."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from oodfilter.data.decode import DEFAULT_MAX_PIXELS
from oodfilter.data.loader import image_batches
from oodfilter.sinks.rows import ManifestRow, build_rows

if TYPE_CHECKING:
    from oodfilter.scoring.scorer import Scorer


def score_files(
    scorer: Scorer,
    paths: Sequence[str | Path],
    *,
    workers: int = 0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    feature_sink: Callable[[torch.Tensor], None] | None = None,
    fast_decode: bool = False,
) -> Iterator[list[ManifestRow]]:
    """Yield the rows of ``paths`` batch by batch, in input order; a file that cannot be decoded is an error row.

    Args:
        scorer: The scorer (its model's own transform preprocesses the images).
        paths: Image files.
        workers: Decoding worker processes (0: decode in this process).
        max_pixels: Decompression-bomb limit per image.
        feature_sink: Called with each batch's (n, D) normalised image features of its ``ok`` rows, in row
            order, before the batch's rows are yielded (``scan --save-features`` stores them).
        fast_decode: Decode a large JPEG reduced in the DCT domain, never below twice the model's input size,
            before the model's own resize (:mod:`oodfilter.data.draft`; scan ``--fast-decode``).

    """
    names = [str(path) for path in paths]
    on_gpu = scorer.device.type == "cuda"
    batches = image_batches(names, scorer.model.preprocess, batch_size=scorer.batch_size, workers=workers,
                            pin_memory=on_gpu, max_pixels=max_pixels, device=scorer.device if on_gpu else None,
                            fast_decode=fast_decode)
    for batch in batches:
        if batch.images is None:
            yield build_rows(names, batch.errors, batch.ok, None)
            continue
        features = scorer.encode_images(batch.images)  # (n, D)
        rows = build_rows(names, batch.errors, batch.ok, scorer.score_features(features))
        if feature_sink is not None:  # rows come in index order; a non-finite score made an error row: no feature
            order = sorted({index for index, _ in batch.errors} | set(batch.ok))
            ok = {index for index, row in zip(order, rows, strict=True) if row.ok}
            feature_sink(features[[p for p, index in enumerate(batch.ok) if index in ok]])
        yield rows
