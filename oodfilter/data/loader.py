"""Encoding image files to features, with decoding in DataLoader workers and bad files reported."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader

from oodfilter.data.dataset import DecodedBatch, ImageFileDataset, collate_decoded
from oodfilter.data.decode import DEFAULT_MAX_PIXELS
from oodfilter.data.draft import fast_decode_for
from oodfilter.data.split_transform import split_transform
from oodfilter.encode_progress import as_hooks


def image_batches(
    paths: Sequence[str],
    transform: Callable[[Any], torch.Tensor],
    *,
    batch_size: int,
    workers: int,
    pin_memory: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    device: torch.device | None = None,
    fast_decode: bool = False,
) -> Iterator[DecodedBatch]:
    """Yield :class:`DecodedBatch` es of ``paths`` in order, decoded and transformed in ``workers`` processes.

    A model's own preprocessing (resize, crop, ToTensor, Normalize) is split: the workers resize and crop
    and hand over uint8 pixels; each batch is normalised here at once (bit-identical, see
    :mod:`oodfilter.data.split_transform`), on ``device`` when given (a GPU: the pinned uint8 batch is
    copied there without blocking, a quarter of the float batch's bytes, and normalised there).
    With ``fast_decode``, a JPEG of at least 4x the resize target decodes reduced in the DCT domain, never
    below twice the target, and is resized as the full image would be (:mod:`oodfilter.data.draft`).
    """
    split = split_transform(transform)
    fast = fast_decode_for(transform) if fast_decode else None
    loader = DataLoader(
        ImageFileDataset(paths, split.pixels if split is not None else transform, max_pixels=max_pixels,
                         fast=fast),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate_decoded,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers > 0 else None,
    )
    for batch in loader:
        if split is not None and batch.images is not None:
            pixels = batch.images if device is None else batch.images.to(device, non_blocking=True)
            batch.images = split.finish(pixels)
        yield batch


@dataclass
class EncodedImages:
    """Features of the images that decoded, and the reasons for those that did not.

    Attributes:
        paths: The decoded files, in input order.
        features: (len(paths), D) float32 normalised features (CPU).
        errors: File → reason, for the files that could not be decoded.
    """

    paths: list[str]
    features: torch.Tensor
    errors: dict[str, str] = field(default_factory=dict)


def encode_image_files(
    encode: Callable[[torch.Tensor], torch.Tensor],
    transform: Callable[[Any], torch.Tensor],
    paths: Sequence[str],
    *,
    batch_size: int = 64,
    workers: int = 0,
    pin_memory: bool = False,
    fast_decode: bool = False,
) -> EncodedImages:
    """Encode image files with ``encode`` ((B, 3, H, W) → (B, D) features), e.g. ``Scorer.encode_images``.

    ``fast_decode`` decodes large JPEGs reduced, as in :func:`image_batches`. The count of files done is
    reported to the ``images`` hook installed by :func:`~oodfilter.encode_progress.reporting_encodes`
    (the command line's progress display), if any.
    """
    ok: list[str] = []
    chunks: list[torch.Tensor] = []
    errors: dict[str, str] = {}
    report = as_hooks(None).images
    if report is not None:
        report(0, len(paths))
    for batch in image_batches(paths, transform, batch_size=batch_size, workers=workers, pin_memory=pin_memory,
                               fast_decode=fast_decode):
        for index, reason in batch.errors:
            errors[paths[index]] = reason
        if batch.images is not None:
            chunks.append(encode(batch.images))
            ok.extend(paths[index] for index in batch.ok)
        if report is not None:
            report(len(ok) + len(errors), len(paths))
    features = torch.cat(chunks) if chunks else torch.zeros(0, 0)
    return EncodedImages(ok, features, errors)
