"""Structure-generic operations on collated batches: find the CLIP view, select samples, concatenate.

Batches are what ``torch.utils.data.default_collate`` makes: dicts, tuples, lists and named tuples of
per-sample tensors (first dimension = batch) and of per-sample lists (strings, numbers, paths).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch


class ClipViewed(NamedTuple):
    """A value paired with the filter's own preprocessed CLIP view of the same image.

    ``default_collate`` keeps named tuples, so a batch carries ``ClipViewed(data=..., clip=(B, 3, H, W))``
    wherever the samples did; :func:`split_clip_view` takes it out again.
    """

    data: Any
    clip: torch.Tensor


def split_clip_view(batch: Any) -> tuple[Any, torch.Tensor | None]:
    """Return (the batch with its :class:`ClipViewed` replaced by the data, the (B, 3, H, W) CLIP views)."""
    found: list[torch.Tensor] = []

    def strip(node: Any) -> Any:
        if isinstance(node, ClipViewed):
            found.append(node.clip)
            return node.data
        if isinstance(node, Mapping):
            return {key: strip(value) for key, value in node.items()}
        if isinstance(node, tuple) and hasattr(node, "_fields"):
            return type(node)(*(strip(value) for value in node))
        if isinstance(node, list | tuple):
            return type(node)(strip(value) for value in node)
        return node

    stripped = strip(batch)
    if len(found) > 1:
        raise ValueError("a batch holds more than one CLIP view; wrap only one image per sample")
    return stripped, (found[0] if found else None)


def _is_per_sample_list(node: Any) -> bool:
    return isinstance(node, list | tuple) and not hasattr(node, "_fields") and all(
        not isinstance(item, list | tuple | Mapping | torch.Tensor) for item in node
    )


def select_samples(batch: Any, keep: torch.Tensor) -> Any:
    """Keep the samples where ``keep`` (B,) is True, in every tensor and per-sample list of ``batch``."""
    indices = torch.nonzero(keep, as_tuple=False).flatten()
    index_list = indices.tolist()

    def pick(node: Any) -> Any:
        if isinstance(node, torch.Tensor):
            return node.index_select(0, indices.to(node.device)) if node.dim() > 0 else node
        if isinstance(node, Mapping):
            return {key: pick(value) for key, value in node.items()}
        if isinstance(node, tuple) and hasattr(node, "_fields"):
            return type(node)(*(pick(value) for value in node))
        if _is_per_sample_list(node):
            return type(node)(node[i] for i in index_list)
        if isinstance(node, list | tuple):
            return type(node)(pick(value) for value in node)
        return node

    return pick(batch)


def concat_batches(parts: Sequence[Any]) -> Any:
    """Concatenate batches of the same structure along the sample dimension."""
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(list(parts)) if first.dim() > 0 else first
    if isinstance(first, Mapping):
        return {key: concat_batches([part[key] for part in parts]) for key in first}
    if isinstance(first, tuple) and hasattr(first, "_fields"):
        return type(first)(*(concat_batches([part[i] for part in parts]) for i in range(len(first))))
    if _is_per_sample_list(first):
        return type(first)(item for part in parts for item in part)
    if isinstance(first, list | tuple):
        return type(first)(concat_batches([part[i] for part in parts]) for i in range(len(first)))
    return first


def batch_size_of(batch: Any) -> int:
    """Return the number of samples in a collated batch (first tensor dimension or per-sample list length)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() > 0 else 1
    if isinstance(batch, Mapping):
        for value in batch.values():
            return batch_size_of(value)
    if _is_per_sample_list(batch):
        return len(batch)
    if isinstance(batch, list | tuple):
        for value in batch:
            return batch_size_of(value)
    return 0
