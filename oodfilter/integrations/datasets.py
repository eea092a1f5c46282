"""Hugging Face ``datasets``: OOD columns for a dataset of images, or the dataset without its OOD rows.

::

    import oodfilter
    from oodfilter.integrations.datasets import add_ood_columns, filter_ood

    scorer = oodfilter.build_scorer(oodfilter.ScorerSpec(model="clipn-vitb16", classes="classes.txt"))
    scored = add_ood_columns(dataset, scorer)          # + ood_score, is_ood, top_class, ood_error
    clean = filter_ood(dataset, scorer)               # only the rows decided in-distribution

The image column is read as encoded bytes (``Image(decode=False)``) and decoded here with the checks every
oodfilter input gets (decompression-bomb limit before any pixel, corrupt images as an error, not an
exception): a bad image is a row with ``ood_error`` set and no score. Scoring runs batched through
``Dataset.map`` on the scorer's device (the GPU when the scorer was built there). The dataset itself is not
changed; both functions return new datasets.
"""

from __future__ import annotations

from typing import Any

import torch

from oodfilter.data.decode import (
    DEFAULT_MAX_PIXELS,
    ImageDecodeError,
    check_max_pixels,
    load_rgb_bytes,
    load_rgb_image,
    to_rgb,
)
from oodfilter.errors import InputError, MissingDependencyError
from oodfilter.messages import excerpt
from oodfilter.scoring.scorer import Scorer

COLUMNS = ("ood_score", "is_ood", "top_class", "ood_error")


def _datasets() -> Any:
    try:
        import datasets
    except ImportError as error:
        raise MissingDependencyError("oodfilter.integrations.datasets needs Hugging Face datasets: pip install "
                                     "'oodfilter[datasets]'") from error
    return datasets


def add_ood_columns(dataset: Any, scorer: Scorer, *, image_column: str = "image", batch_size: int | None = None,
                    max_pixels: int = DEFAULT_MAX_PIXELS) -> Any:
    """Return ``dataset`` with ``ood_score``, ``is_ood``, ``top_class`` and ``ood_error`` columns (higher = more OOD).

    Args:
        dataset: A ``datasets.Dataset`` whose ``image_column`` is an ``Image`` feature (or holds file paths).
        scorer: The scorer (model, class list, method, decision rule).
        image_column: The column with the images.
        batch_size: Rows per scoring batch (default: the scorer's batch size).
        max_pixels: Decompression-bomb limit per image.

    Raises:
        InputError: the dataset has no such column, or already has one of the output columns, or
            ``max_pixels`` is not a whole number of at least 1.

    """
    check_max_pixels(max_pixels)
    datasets = _datasets()
    if not isinstance(dataset, datasets.Dataset):
        raise InputError(f"add_ood_columns takes a datasets.Dataset, got {type(dataset).__name__}: for a DatasetDict "
                         "pass one split (dataset['train']); a streaming IterableDataset is not supported")
    if image_column not in dataset.column_names:
        raise InputError(f"the dataset has no column '{image_column}' (it has {', '.join(dataset.column_names)}); "
                         "pass image_column=")
    taken = [name for name in COLUMNS if name in dataset.column_names]
    if taken:
        raise InputError(f"the dataset already has {', '.join(taken)}; remove those columns first")
    view = dataset.select_columns([image_column])
    if isinstance(view.features[image_column], datasets.Image):
        view = view.cast_column(image_column, datasets.Image(decode=False))

    def score(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        return _score_batch(scorer, batch[image_column], max_pixels)

    features = datasets.Features({"ood_score": datasets.Value("float64"), "is_ood": datasets.Value("bool"),
                                  "top_class": datasets.Value("string"), "ood_error": datasets.Value("string")})
    if len(dataset) == 0:  # map adds no columns to an empty dataset
        for name in COLUMNS:
            dataset = dataset.add_column(name, [], feature=features[name])
        return dataset
    scored = view.map(score, batched=True, batch_size=batch_size or scorer.batch_size,
                      remove_columns=[image_column], features=features, desc="oodfilter scoring")
    return datasets.concatenate_datasets([dataset, scored], axis=1)


def filter_ood(dataset: Any, scorer: Scorer, *, keep: str = "id", image_column: str = "image",
               batch_size: int | None = None) -> Any:
    """Return the rows of ``dataset`` decided in-distribution (``keep="id"``) or OOD (``keep="ood"``).

    Rows whose image could not be read are in neither. The output columns of :func:`add_ood_columns` are
    kept, so what was decided stays visible.

    Raises:
        InputError: ``keep`` is not ``id`` or ``ood``, or the scorer gives no decision (a method without a
            rule of its own needs a threshold or a calibration).

    """
    if keep not in ("id", "ood"):
        raise InputError(f"keep must be 'id' or 'ood', got {excerpt(keep)}")
    if scorer.threshold is None and not scorer.method.threshold_free:
        raise InputError(f"{scorer.method.name} gives no decision without a threshold: build the scorer with "
                         "threshold= or calibration= (oodfilter.calibrate)")
    scored = add_ood_columns(dataset, scorer, image_column=image_column, batch_size=batch_size)
    wanted = keep == "ood"
    return scored.filter(lambda decided: decided is wanted, input_columns="is_ood", desc="oodfilter filter")


def _score_batch(scorer: Scorer, images: list[Any], max_pixels: int) -> dict[str, list[Any]]:
    """Decode, preprocess and score one batch; an unreadable image is a row with ``ood_error`` and no score."""
    out: dict[str, list[Any]] = {name: [None] * len(images) for name in COLUMNS}
    pixels, scored = [], []
    for position, image in enumerate(images):
        try:
            pixels.append(scorer.model.preprocess(_to_rgb(image, position, max_pixels)))
            scored.append(position)
        except ImageDecodeError as error:
            out["ood_error"][position] = error.reason
        except Exception as error:  # a transform failure is one bad row, as in a scan
            out["ood_error"][position] = f"preprocessing failed: {type(error).__name__}: {error}"
    if not pixels:
        return out
    result = scorer.score_images(torch.stack(pixels))
    names = result.top_class_names
    decisions = result.is_ood.tolist() if result.is_ood is not None else [None] * len(scored)
    for row, position in enumerate(scored):
        score = float(result.ood_score[row])
        if score != score or score in (float("inf"), float("-inf")):
            out["ood_error"][position] = f"{result.method} gave a non-finite score ({score})"
            continue
        out["ood_score"][position] = score
        out["is_ood"][position] = decisions[row]
        out["top_class"][position] = names[row]
    return out


def _to_rgb(image: Any, position: int, max_pixels: int) -> Any:
    """Decode one cell of the image column: encoded bytes, a file path, or an already decoded PIL image."""
    from PIL import Image

    if isinstance(image, dict):
        if image.get("bytes"):
            return load_rgb_bytes(image["bytes"], image.get("path") or f"row {position}", max_pixels=max_pixels)
        if image.get("path"):
            return load_rgb_image(image["path"], max_pixels=max_pixels)
        raise ImageDecodeError(f"row {position}", "the image cell is empty")
    if isinstance(image, str):
        return load_rgb_image(image, max_pixels=max_pixels)
    if isinstance(image, Image.Image):
        if image.width * image.height > max_pixels:
            raise ImageDecodeError(f"row {position}", f"{image.width}x{image.height} pixels exceeds the limit of "
                                                      f"{max_pixels}")
        return to_rgb(image)
    if image is None:
        raise ImageDecodeError(f"row {position}", "the image cell is empty")
    raise ImageDecodeError(f"row {position}", f"not an image ({type(image).__name__})")
