"""Scanning on a Ray cluster with Ray Data (the optional ``ray`` extra).

Pipeline: the paths still to score → decode and preprocess in CPU tasks, with the same safe decoder as
the local scan (a bad file becomes an error row) → score in an actor pool (each actor holds the model and
the class vectors once; one GPU per actor where GPUs exist) → rows streamed back to the driver, which
appends them to the manifest batch by batch. The manifest therefore has the local scan's format and
schema, and ``--resume`` works the same way: a re-run scores only the paths the manifest lacks. Ray
retries failed tasks; a corrupt file never fails the job. Files must be readable from every node.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oodfilter.data.decode import DEFAULT_MAX_PIXELS, ImageDecodeError, load_rgb_image
from oodfilter.errors import MissingDependencyError
from oodfilter.model.clipn import CLIPN
from oodfilter.sinks.manifest import ManifestWriter, Row

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


def _require_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as error:
        raise MissingDependencyError("the Ray engine needs Ray: pip install 'oodfilter[ray]'") from error
    return ray


def decode_batch(
    batch: dict[str, np.ndarray], *, preprocess: Callable[[Any], torch.Tensor], image_size: int, max_pixels: int
) -> dict[str, np.ndarray]:
    """Ray Data task: decode and preprocess a batch of paths; a bad file gets an error and a zero image."""
    images, errors = [], []
    for path in batch["path"]:
        try:
            images.append(preprocess(load_rgb_image(str(path), max_pixels=max_pixels)).numpy())
            errors.append("")
        except ImageDecodeError as error:
            images.append(np.zeros((3, image_size, image_size), dtype=np.float32))
            errors.append(error.reason)
        except Exception as error:  # a transform failure is one bad input, not a failed job
            images.append(np.zeros((3, image_size, image_size), dtype=np.float32))
            errors.append(f"preprocessing failed: {type(error).__name__}: {error}")
    return {"path": batch["path"], "image": np.stack(images).astype(np.float32), "error": np.array(errors)}


class ScoreActor:
    """Ray Data actor: holds the model, class vectors and scorer; scores decoded batches."""

    def __init__(self, model: Any, scorer_options: dict[str, Any], index_options: dict[str, Any]) -> None:
        from oodfilter.scoring.scorer import Scorer
        from oodfilter.text.index import build_text_index

        ray = _require_ray()
        if isinstance(model, ray.ObjectRef):  # the model travels once through the object store
            model = ray.get(model)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(device).eval()
        index = build_text_index(self.model, **index_options)
        self.scorer = Scorer(self.model, index, device=device, **scorer_options)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Return manifest columns for a decoded batch."""
        ok = np.array([not e for e in batch["error"]], dtype=bool)
        size = len(batch["path"])
        ood = np.full(size, np.nan)
        decision = np.full(size, -1, dtype=np.int8)  # -1: none
        top = np.array([""] * size, dtype=object)
        prob = np.full(size, np.nan)
        if ok.any():
            result = self.scorer.score_images(torch.from_numpy(batch["image"][ok]))
            ood[ok] = result.ood_score.double().numpy()
            if result.is_ood is not None:
                decision[ok] = result.is_ood.numpy().astype(np.int8)
            top[ok] = result.top_class_names
            prob[ok] = result.top_prob.double().numpy()
        return {"path": batch["path"], "error": batch["error"], "ood_score": ood, "decision": decision,
                "top_class": top, "top_prob": prob}


def _rows(batch: dict[str, np.ndarray]) -> list[Row]:
    rows: list[Row] = []
    for i, path in enumerate(batch["path"]):
        if batch["error"][i]:
            rows.append({"path": str(path), "status": "error", "error": str(batch["error"][i])})
        else:
            decision = int(batch["decision"][i])
            rows.append({"path": str(path), "status": "ok", "error": None,
                         "ood_score": float(batch["ood_score"][i]),
                         "is_ood": None if decision < 0 else bool(decision),
                         "top_class": str(batch["top_class"][i]), "top_prob": float(batch["top_prob"][i])})
    return rows


def score_files_with_ray(
    model: CLIPN,
    paths: list[str],
    out: Path,
    *,
    append: bool,
    scorer_options: dict[str, Any],
    index_options: dict[str, Any],
    batch_size: int,
    address: str | None = None,
    num_actors: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: Progress | None = None,
    total: int = 0,
    already: int = 0,
) -> None:
    """Score ``paths`` on Ray and append their rows to the manifest ``out`` as they arrive."""
    ray = _require_ray()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # the same manifest order on every run
    gpus = int(ray.cluster_resources().get("GPU", 0))
    actors = num_actors if num_actors else max(1, gpus)  # one actor per GPU, or one on the CPU
    if model.preprocess is None:
        raise MissingDependencyError("the model has no image transform")
    dataset = ray.data.from_items([{"path": p} for p in paths])
    decoded = dataset.map_batches(
        decode_batch,
        fn_kwargs={"preprocess": model.preprocess, "image_size": model.image_size, "max_pixels": max_pixels},
        batch_size=batch_size,
        num_cpus=1,
    )
    model_ref = ray.put(model.cpu())
    scored = decoded.map_batches(
        ScoreActor,
        fn_constructor_kwargs={"model": model_ref, "scorer_options": scorer_options, "index_options": index_options},
        batch_size=batch_size,
        concurrency=actors,
        num_gpus=1 if gpus else 0,
        num_cpus=0 if gpus else 1,
    )
    writer = ManifestWriter(out, append=append)
    done = already
    try:
        for batch in scored.iter_batches(batch_size=None, batch_format="numpy"):
            rows = _rows(batch)
            writer.write(rows)
            done += len(rows)
            if progress is not None:
                progress(done, total)
    finally:
        writer.close()
