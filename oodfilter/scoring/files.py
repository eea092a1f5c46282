"""Scoring image files: decode in DataLoader workers, score each batch, one manifest row per file."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

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
) -> Iterator[list[ManifestRow]]:
    """Yield the rows of ``paths`` batch by batch, in input order; a file that cannot be decoded is an error row.

    Args:
        scorer: The scorer (its model's own transform preprocesses the images).
        paths: Image files.
        workers: Decoding worker processes (0: decode in this process).
        max_pixels: Decompression-bomb limit per image.

    """
    names = [str(path) for path in paths]
    batches = image_batches(names, scorer.model.preprocess, batch_size=scorer.batch_size, workers=workers,
                            pin_memory=scorer.device.type == "cuda", max_pixels=max_pixels)
    for batch in batches:
        result = scorer.score_images(batch.images) if batch.images is not None else None
        yield build_rows(names, batch.errors, batch.ok, result)
