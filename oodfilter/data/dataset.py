"""A dataset of image files for scanning: decoding and preprocessing run in DataLoader workers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from oodfilter.data.decode import (
    DEFAULT_MAX_PIXELS,
    ImageDecodeError,
    check_max_pixels,
    load_reduced_rgb_image,
    load_rgb_image,
)
from oodfilter.data.draft import FastDecode


@dataclass
class DecodedBatch:
    """A batch out of the loader: decoded images plus the inputs that failed.

    Attributes:
        ok: Dataset indices of the decoded images, in batch order.
        images: (len(ok), 3, H, W) preprocessed images, or None when every input failed (uint8 pixels or
            [0, 1] floats while they are still to be normalised, see :mod:`oodfilter.data.split_transform`).
        errors: (dataset index, reason) for each input that failed.

    """

    ok: list[int]
    images: torch.Tensor | None
    errors: list[tuple[int, str]]

    def pin_memory(self) -> DecodedBatch:
        """Pin the image tensor (called by the DataLoader when ``pin_memory=True``)."""
        if self.images is not None:
            self.images = self.images.pin_memory()
        return self


def decode_item(
    path: str, transform: Callable[[Any], torch.Tensor], max_pixels: int = DEFAULT_MAX_PIXELS,
    fast: FastDecode | None = None,
) -> tuple[torch.Tensor | None, str | None]:
    """Decode and preprocess one image file → (image, None), or (None, reason) when it cannot be used.

    Every engine decodes through this function, so a bad file is the same error row everywhere. With
    ``fast`` (:func:`~oodfilter.data.draft.fast_decode_for` of ``transform``), a large JPEG decodes reduced
    and is resized as ``transform``'s first step would resize the full image, before ``transform`` runs.
    """
    try:
        if fast is None:
            image = load_rgb_image(path, max_pixels=max_pixels)
        else:
            decoded = load_reduced_rgb_image(path, fast.floor, max_pixels=max_pixels)
    except ImageDecodeError as error:
        return None, error.reason
    try:
        if fast is not None:
            image = fast(decoded)
        return transform(image), None
    except Exception as error:  # a transform failure is one bad input, not a failed scan
        return None, f"preprocessing failed: {type(error).__name__}: {error}"


class ImageFileDataset(Dataset[dict[str, Any]]):
    """Decodes and preprocesses one image file per item; a bad file gives an error item, never an exception.

    Args:
        paths: The files, in scan order.
        transform: PIL image → (3, H, W) tensor (the model's own preprocessing).
        max_pixels: Decompression-bomb limit.
        fast: Decode large JPEGs reduced (see :func:`decode_item`); None decodes every image in full.

    Raises:
        InputError: ``max_pixels`` is not a whole number of at least 1.

    """

    def __init__(
        self,
        paths: Sequence[str],
        transform: Callable[[Any], torch.Tensor],
        max_pixels: int = DEFAULT_MAX_PIXELS,
        fast: FastDecode | None = None,
    ) -> None:
        self.paths = list(paths)
        self.transform = transform
        self.max_pixels = check_max_pixels(max_pixels)  # a bad limit is one clear error, not an error row per image
        self.fast = fast

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, error = decode_item(self.paths[index], self.transform, self.max_pixels, self.fast)
        return {"index": index, "image": image, "error": error}


def collate_decoded(items: list[dict[str, Any]]) -> DecodedBatch:
    """Collate dataset items into a :class:`DecodedBatch`."""
    good = [item for item in items if item["image"] is not None]
    images = [item["image"] for item in good]
    if len({image.dtype for image in images}) > 1:  # uint8 pixels beside [0, 1] floats: scale as ToTensor does
        images = [image.float().div(255) if image.dtype == torch.uint8 else image for image in images]
    return DecodedBatch(
        ok=[item["index"] for item in good],
        images=torch.stack(images) if good else None,
        errors=[(item["index"], item["error"]) for item in items if item["image"] is None],
    )
