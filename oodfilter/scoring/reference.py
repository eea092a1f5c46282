"""Reference features for the fitted methods: read from manifests' stored features, or encoded from images.

:func:`load_reference` turns ``reference=`` items (see :mod:`oodfilter.scoring.reference_paths`) into one
(N, D) feature matrix: a manifest that stores features of the model's image tower (in the scorer's
precision) is read without opening an image, as ``--calibrate-on`` is; everything else is encoded once.
The result carries a digest of the features, which manifests record so that a resume with another
reference is refused.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from oodfilter.data.loader import encode_image_files
from oodfilter.errors import InputError
from oodfilter.scoring.reference_paths import is_reference_manifest, reference_images
from oodfilter.sinks.features import matching_features

if TYPE_CHECKING:
    from oodfilter.scoring.scorer import Scorer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReferenceFeatures:
    """Features of known in-distribution images that a fitted method is fitted on.

    Attributes:
        features: (N, D) float32 L2-normalised features, on the CPU.
        sources: The reference items as given (for the record).
        stored: How many features were read from manifests' stored features (the rest were encoded).
        sha256: Digest of the features (shape and float32 bytes): what a resume compares.

    """

    features: torch.Tensor
    sources: tuple[str, ...] = ()
    stored: int = 0
    sha256: str = field(default="")

    def __post_init__(self) -> None:
        if not self.sha256:
            object.__setattr__(self, "sha256", features_digest(self.features))

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def meta(self) -> dict[str, Any]:
        """Return what a manifest records of the reference (JSON-able)."""
        return {"paths": list(self.sources), "count": len(self), "stored": self.stored,
                "features_sha256": self.sha256}


def features_digest(features: torch.Tensor) -> str:
    """sha256 over the shape and the float32 little-endian bytes of (N, D) ``features``."""
    data = np.ascontiguousarray(features.detach().cpu().float().numpy(), dtype="<f4")
    digest = hashlib.sha256(repr(tuple(data.shape)).encode())
    digest.update(data.tobytes())
    return digest.hexdigest()


def load_reference(items: Sequence[str], scorer: Scorer, *, workers: int = 0) -> ReferenceFeatures:
    """Return the features of the reference ``items``: stored ones read, the rest encoded with ``scorer``.

    Args:
        items: Image files, folders, globs, manifests (see :func:`~oodfilter.scoring.reference_paths.reference_images`).
        scorer: Any scorer of the model (its image tower, device, batch size and precision encode the images).
        workers: Decoding worker processes.

    Raises:
        InputError: an item without images, or no image that could be decoded.

    """
    fingerprint = scorer.model.image_fingerprint()
    blocks: list[torch.Tensor] = []  # (n, D) each
    files: list[str] = []
    stored = 0
    for item in items:
        found = matching_features(item, fingerprint, scorer.precision) if is_reference_manifest(item) else None
        if found is not None:  # stored features of this tower: nothing to encode
            block = torch.from_numpy(np.asarray(found[1], dtype=np.float32))
            blocks.append(block)
            stored += block.shape[0]
        else:
            files += reference_images([item])
    if files:
        encoded = encode_image_files(scorer.encode_images, scorer.model.preprocess, files,
                                     batch_size=scorer.batch_size, workers=workers)
        if encoded.errors:
            first = next(iter(encoded.errors.items()))
            warnings.warn(f"{len(encoded.errors)} reference image(s) could not be decoded and are left out "
                          f"(first: {first[0]}: {first[1]})", stacklevel=2)
        if encoded.paths:
            blocks.append(encoded.features.float())
    if not blocks:
        raise InputError(f"--reference {' '.join(items)}: no image could be read to fit on")
    features = torch.nn.functional.normalize(torch.cat(blocks).float(), dim=-1)  # (N, D)
    logger.info("reference: %d features (%d stored, %d encoded)", len(features), stored, len(features) - stored)
    return ReferenceFeatures(features, tuple(str(item) for item in items), stored)


def reference_record(scorer: Scorer) -> dict[str, Any] | None:
    """Return what a manifest's meta records of a scorer's reference and fit (None without a reference)."""
    reference = getattr(scorer, "reference", None)
    if reference is None:
        return None
    record = reference.meta()
    fitted = getattr(scorer.method, "fitted_meta", None)
    if callable(fitted) and fitted():
        record["fit"] = fitted()
    return record
