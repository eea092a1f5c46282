"""Fit a calibration for a scorer from known in-distribution images (files or image features).

The threshold math and the `Calibration` record live in `oodfilter.decision` (below scoring); this is the
one place that scores calibration images for it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from oodfilter.data.decode import DEFAULT_MAX_PIXELS
from oodfilter.data.discovery import discover_images
from oodfilter.decision.calibration import Calibration
from oodfilter.decision.identity import score_identity
from oodfilter.errors import InputError
from oodfilter.scoring.files import score_files
from oodfilter.scoring.scorer import Scorer
from oodfilter.sinks.rows import ManifestRow


def calibrate(
    scorer: Scorer, id_images: Sequence[str | Path] | str | Path | torch.Tensor, id_recall: float, *, workers: int = 0,
    max_pixels: int = DEFAULT_MAX_PIXELS, source: str = "", fast_decode: bool = False,
) -> Calibration:
    """Fit the threshold that keeps ``id_recall`` of ``scorer``'s in-distribution images.

    Args:
        scorer: The scorer whose scores the threshold is for (its model, class list, templates, method).
        id_images: Files known to be in-distribution (unlabelled; a list, or a folder or glob), or their
            (N, D) normalised image features.
        id_recall: The share R to keep, in (0, 1].
        workers: Decoding processes for files.
        max_pixels: Decompression-bomb limit per image file.
        source: Where the images came from, recorded in the calibration as "N images from SOURCE"
            (default: "N image files" or "N image features").
        fast_decode: Decode large JPEGs reduced, as the scan the threshold is for does
            (:func:`~oodfilter.scoring.files.score_files`).

    Returns:
        The calibration; ``scorer.threshold = calibration.threshold`` (or ``ScorerSpec(calibration=...)``)
        decides with it.

    Raises:
        InputError: R outside (0, 1], or fewer usable images than
            :func:`~oodfilter.decision.minimum_calibration_images` asks for.

    """
    if isinstance(id_images, str | Path):  # a folder, a glob or one file
        where = str(id_images)
        id_images = [item.name for item in discover_images([where]) if item.error is None]
        if not id_images:
            raise InputError(f"no image found in {where} to calibrate on")
    if isinstance(id_images, torch.Tensor):
        scores = scorer.score_features(id_images).ood_score.double()  # (N,)
        kind = "image features"
    else:
        values: list[float] = []
        failed: list[ManifestRow] = []
        for rows in score_files(scorer, [str(path) for path in id_images], workers=workers, max_pixels=max_pixels,
                                fast_decode=fast_decode):
            values += [row.score for row in rows if row.ok]
            failed += [row for row in rows if not row.ok]
        if failed:
            warnings.warn(f"{len(failed)} of {len(id_images)} calibration images could not be read and were left "
                          f"out (first: {failed[0].path}: {failed[0].error})", stacklevel=2)
        scores = torch.tensor(values, dtype=torch.float64)
        kind = "image files"
    described = f"{len(scores)} images from {source}" if source else f"{len(scores)} {kind}"
    return Calibration.fit(scores, id_recall, method=scorer.method.name, identity=score_identity(scorer),
                           source=described)
