"""FilteredLoader: iterate a DataLoader through an OODFilter, optionally re-filling dropped batches."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch

from oodfilter.pipeline.batches import batch_size_of, concat_batches, select_samples
from oodfilter.pipeline.filter import OODFilter


class FilteredLoader:
    """Wraps an iterable of collated batches (usually a ``DataLoader``) with an :class:`OODFilter`.

    Workers decode and build both views; scoring runs here, in the training process, batched on the
    filter's device.

    Args:
        loader: The user's DataLoader over a wrapped dataset (see :meth:`OODFilter.wrap_transform`).
        ood_filter: The filter.
        refill: In drop mode, regroup the kept samples into batches of ``batch_size`` (the last one may be
            smaller); otherwise each batch just loses its OOD samples (empty ones are skipped).
        batch_size: Batch size for ``refill``; default: the loader's ``batch_size``.

    """

    def __init__(
        self, loader: Iterable[Any], ood_filter: OODFilter, *, refill: bool = False, batch_size: int | None = None
    ) -> None:
        self.loader = loader
        self.filter = ood_filter
        self.refill = refill
        self.batch_size = batch_size or getattr(loader, "batch_size", None)
        if refill and not self.batch_size:
            raise ValueError("refill needs the batch size: pass batch_size=")

    def __iter__(self) -> Iterator[Any]:
        self.filter.start_pass()
        if self.filter.mode != "drop" or not self.refill:
            for batch in self.loader:
                out = self.filter.process(batch)
                if out is not None:
                    yield out
            return
        yield from self._refilled()

    def _refilled(self) -> Iterator[Any]:
        size = int(self.batch_size or 0)
        pending: list[Any] = []
        count = 0
        for batch in self.loader:
            out = self.filter.process(batch)
            if out is None:
                continue
            pending.append(out)
            count += batch_size_of(out)
            while count >= size:
                merged = concat_batches(pending) if len(pending) > 1 else pending[0]
                yield _head(merged, size)
                rest = count - size
                pending = [_tail(merged, size)] if rest else []
                count = rest
        if pending:
            yield concat_batches(pending) if len(pending) > 1 else pending[0]

    def __len__(self) -> int:
        """Batches of the wrapped loader (an upper bound in drop mode)."""
        return len(self.loader)  # type: ignore[arg-type]


def _head(batch: Any, size: int) -> Any:
    total = batch_size_of(batch)
    return batch if total == size else select_samples(batch, torch.arange(total) < size)


def _tail(batch: Any, size: int) -> Any:
    return select_samples(batch, torch.arange(batch_size_of(batch)) >= size)
