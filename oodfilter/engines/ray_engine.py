"""Scanning on a Ray cluster with Ray Data (the optional ``ray`` extra).

Pipeline: the paths still to score → decode and preprocess in CPU tasks, with the same safe decoder as
the local scan (a bad file becomes an error row) → score in an actor pool (each actor builds its scorer
once from a :class:`~oodfilter.scoring.spec.ScorerSpec`; one GPU per actor where GPUs exist) → rows
streamed back to the driver, where the scan appends them to the manifest through the same writer as the
local engine. The manifest therefore has the local scan's format and
schema, and ``--resume`` works the same way: a re-run scores only the paths the manifest lacks. Ray
retries failed tasks; a corrupt file never fails the job. Files must be readable from every node.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from oodfilter.data.dataset import decode_item
from oodfilter.data.decode import DEFAULT_MAX_PIXELS, check_max_pixels
from oodfilter.data.draft import fast_decode_for
from oodfilter.errors import MissingDependencyError
from oodfilter.model.clipn import CLIPN
from oodfilter.scoring.factory import build_scorer
from oodfilter.scoring.spec import ScorerSpec
from oodfilter.sinks.row_columns import rows_from_columns, rows_to_columns
from oodfilter.sinks.rows import ManifestRow, build_rows

logger = logging.getLogger(__name__)



def _require_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as error:
        raise MissingDependencyError("the Ray engine needs Ray: pip install 'oodfilter[ray]'") from error
    return ray


def decode_batch(
    batch: dict[str, np.ndarray], *, preprocess: Callable[[Any], torch.Tensor], image_size: int, max_pixels: int,
    fast_decode: bool = False,
) -> dict[str, np.ndarray]:
    """Ray Data task: decode and preprocess a batch of paths; a bad file gets an error and a zero image."""
    images, errors = [], []
    fast = fast_decode_for(preprocess) if fast_decode else None
    for path in batch["path"]:
        image, error = decode_item(str(path), preprocess, max_pixels, fast)
        images.append(image.numpy() if image is not None else np.zeros((3, image_size, image_size), np.float32))
        errors.append(error or "")
    return {"path": batch["path"], "image": np.stack(images).astype(np.float32), "error": np.array(errors)}


class ScoreActor:
    """Ray Data actor: builds the scorer once from the spec (model from the object store); scores decoded batches."""

    def __init__(self, model: Any, spec: ScorerSpec, with_features: bool = False) -> None:
        ray = _require_ray()
        if isinstance(model, ray.ObjectRef):  # the model travels once through the object store
            model = ray.get(model)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.scorer = build_scorer(replace(spec, device=device), model=model)
        self.with_features = with_features

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Return the manifest rows of a decoded batch, as columns (plus ``feature``, (n, D) float16, if asked)."""
        paths = [str(path) for path in batch["path"]]
        errors = [(i, str(reason)) for i, reason in enumerate(batch["error"]) if reason]
        ok = [i for i, reason in enumerate(batch["error"]) if not reason]
        features = self.scorer.encode_images(torch.from_numpy(batch["image"][ok])) if ok else None  # (n_ok, D)
        result = self.scorer.score_features(features) if features is not None else None
        columns = rows_to_columns(build_rows(paths, errors, ok, result))
        if self.with_features:  # one row per input, zeros for error rows; the driver keeps the ok rows'
            full = np.zeros((len(paths), self.scorer.model.embed_dim), dtype=np.float16)
            if features is not None:
                full[ok] = features.to(torch.float16).numpy()
            columns["feature"] = full
        return columns


def score_files_with_ray(
    spec: ScorerSpec,
    model: CLIPN,
    paths: list[str],
    *,
    batch_size: int,
    address: str | None = None,
    num_actors: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    feature_sink: Callable[[torch.Tensor], None] | None = None,
    fast_decode: bool = False,
) -> Iterator[list[ManifestRow]]:
    """Score ``paths`` on Ray and yield their rows batch by batch, in input order, as they arrive.

    Args:
        spec: The scorer every actor builds (its class list given as names, not a file).
        model: The loaded model; it travels once through the object store.
        paths: Image files, readable from every node.
        batch_size: Images per decode task and per scoring call.
        address: Ray cluster address (None: start or join a local one).
        num_actors: Scoring actors (default: one per GPU, else one).
        max_pixels: Decompression-bomb limit per image.
        feature_sink: Called with each batch's (n, D) image features of its ``ok`` rows, in row order,
            before the batch's rows are yielded (as :func:`~oodfilter.scoring.files.score_files` does).
        fast_decode: Decode large JPEGs reduced, never below twice the model's input size
            (:mod:`oodfilter.data.draft`).

    """
    check_max_pixels(max_pixels)
    ray = _require_ray()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # the same manifest order on every run
    gpus = int(ray.cluster_resources().get("GPU", 0))
    decoded = ray.data.from_items([{"path": p} for p in paths]).map_batches(
        decode_batch,
        fn_kwargs={"preprocess": model.preprocess, "image_size": model.image_size, "max_pixels": max_pixels,
                   "fast_decode": fast_decode},
        batch_size=batch_size,
        num_cpus=1,
    )
    scored = decoded.map_batches(
        ScoreActor,
        fn_constructor_kwargs={"model": ray.put(model.cpu()), "spec": spec, "with_features": feature_sink is not None},
        batch_size=batch_size,
        concurrency=num_actors or max(1, gpus),  # one actor per GPU, or one on the CPU
        num_gpus=1 if gpus else 0,
        num_cpus=0 if gpus else 1,
    )
    for batch in scored.iter_batches(batch_size=None, batch_format="numpy"):
        rows = rows_from_columns(batch)
        if feature_sink is not None:  # a non-finite score made an error row: no feature
            kept = batch["feature"][[i for i, row in enumerate(rows) if row.ok]]
            feature_sink(torch.from_numpy(np.asarray(kept, dtype=np.float32)))
        yield rows
