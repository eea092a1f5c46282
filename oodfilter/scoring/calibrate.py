"""Fit a calibration for a scorer from known in-distribution images (files or image features).

The threshold math and the `Calibration` record live in `oodfilter.decision` (below scoring); this is the
one place that scores calibration images for it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from oodfilter.data.discovery import discover_images
from oodfilter.decision.calibration import Calibration
from oodfilter.decision.identity import score_identity
from oodfilter.errors import InputError
from oodfilter.scoring.files import score_files
from oodfilter.scoring.scorer import Scorer


def calibrate(
    scorer: Scorer, id_images: Sequence[str | Path] | str | Path | torch.Tensor, id_recall: float, *, workers: int = 0,
    source: str = "",
) -> Calibration:
    """Fit the threshold that keeps ``id_recall`` of ``scorer``'s in-distribution images.

    Args:
        scorer: The scorer whose scores the threshold is for (its model, class list, templates, method).
        id_images: Files known to be in-distribution (unlabelled; a list, or a folder or glob), or their
            (N, D) normalised image features.
        id_recall: The share R to keep, in (0, 1].
        workers: Decoding processes for files.
        source: What the images were, recorded in the calibration.

    Returns:
        The calibration; ``scorer.threshold = calibration.threshold`` (or ``ScorerSpec(calibration=...)``)
        decides with it.

    Raises:
        InputError: R outside (0, 1], or fewer usable images than
            :func:`~oodfilter.decision.minimum_calibration_images` asks for.

    """
    if isinstance(id_images, str | Path):  # a folder, a glob or one file
        where = str(id_images)
        id_images = [item.path for item in discover_images([where]) if item.error is None]
        if not id_images:
            raise InputError(f"no image found in {where} to calibrate on")
    if isinstance(id_images, torch.Tensor):
        scores = scorer.score_features(id_images).ood_score.double()  # (N,)
        source = source or f"{len(id_images)} image features"
    else:
        values: list[float] = []
        failed = 0
        for rows in score_files(scorer, [str(path) for path in id_images], workers=workers):
            values += [row.score for row in rows if row.ok]
            failed += sum(not row.ok for row in rows)
        if failed:
            warnings.warn(f"{failed} of {len(id_images)} calibration images could not be read and were left out",
                          stacklevel=2)
        scores = torch.tensor(values, dtype=torch.float64)
        source = source or f"{len(values)} image files"
    return Calibration.fit(scores, id_recall, method=scorer.method.name, identity=score_identity(scorer),
                           source=source)
