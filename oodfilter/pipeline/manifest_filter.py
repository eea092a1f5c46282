"""Offline filtering: drop or down-weight the samples a previous ``oodfilter scan`` marked OOD."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Sampler, Subset

from oodfilter.errors import InputError
from oodfilter.sinks.manifest import read_manifest
from oodfilter.sinks.row_paths import manifest_base, resolve_row_path


def dataset_paths(dataset: Any) -> list[str]:
    """Return the file path of each sample of ``dataset`` (torchvision ``ImageFolder``-style datasets).

    Raises:
        InputError: the dataset does not expose its paths; pass them explicitly.

    """
    samples = getattr(dataset, "samples", None) or getattr(dataset, "imgs", None)
    if samples is not None:
        return [str(item[0] if isinstance(item, tuple | list) else item) for item in samples]
    paths = getattr(dataset, "paths", None)
    if paths is not None:
        return [str(p) for p in paths]
    raise InputError(f"cannot tell the file of each sample of {type(dataset).__name__}; pass paths=[...]")


class ManifestFilter:
    """Decisions from a scan manifest, matched to a dataset's files by path.

    Paths are compared as absolute paths; relative manifest paths are taken relative to the folder the
    scan ran in (recorded beside the manifest), else to the manifest's own folder
    (:func:`~oodfilter.sinks.row_paths.resolve_row_path`); the dataset's relative paths to the current folder.

    Args:
        manifest: The manifest a scan wrote.
        threshold: Decide ``ood_score > threshold`` instead of the manifest's ``is_ood``.
        keep_errors: Keep samples whose scan row is an error (default: drop them, they did not decode).

    """

    def __init__(self, manifest: str | Path, *, threshold: float | None = None, keep_errors: bool = False) -> None:
        self.manifest = Path(manifest)
        rows = read_manifest(self.manifest)
        if not rows:
            raise InputError(f"manifest {self.manifest} is missing or empty; run oodfilter scan first")
        base = manifest_base(self.manifest)
        self._drop: dict[str, bool] = {}
        for row in rows:
            key = resolve_row_path(row.path, base)
            if row.status != "ok":
                self._drop[key] = not keep_errors
            elif threshold is not None:
                self._drop[key] = row.score > threshold
            elif row.is_ood is None:
                raise InputError(
                    f"manifest {self.manifest} has no decisions (its method needs a threshold): pass threshold="
                )
            else:
                self._drop[key] = bool(row.is_ood)

    def drop_mask(self, paths: Sequence[str | Path]) -> torch.Tensor:
        """Return (N,) bool, True where the sample should be dropped.

        Raises:
            InputError: some paths are not in the manifest (the first few are named).

        """
        keys = [_absolute(str(p), Path.cwd()) for p in paths]
        missing = [str(p) for p, key in zip(paths, keys, strict=True) if key not in self._drop]
        if missing:
            shown = ", ".join(missing[:5]) + (f", ... ({len(missing)} in all)" if len(missing) > 5 else "")
            raise InputError(
                f"manifest {self.manifest} does not cover {len(missing)} of {len(paths)} dataset files: {shown}; "
                "scan those files (oodfilter scan --resume) or pass the paths the scan used"
            )
        return torch.tensor([self._drop[key] for key in keys], dtype=torch.bool)

    def keep_indices(self, paths: Sequence[str | Path]) -> list[int]:
        """Return the indices of the samples to keep."""
        return torch.nonzero(~self.drop_mask(paths)).flatten().tolist()

    def subset(self, dataset: Any, paths: Sequence[str | Path] | None = None) -> Subset[Any]:
        """Return ``dataset`` without its OOD samples (a ``torch.utils.data.Subset``)."""
        return Subset(dataset, self.keep_indices(paths if paths is not None else dataset_paths(dataset)))

    def sampler(
        self,
        paths: Sequence[str | Path],
        *,
        ood_weight: float = 0.0,
        shuffle: bool = True,
        generator: torch.Generator | None = None,
    ) -> Sampler[int]:
        """Return a sampler over the kept samples (``ood_weight=0``) or over all, OOD down-weighted.

        With ``ood_weight > 0`` samples are drawn with replacement, OOD ones with that relative weight.
        """
        drop = self.drop_mask(paths)
        if ood_weight > 0:
            weights = [ood_weight if dropped else 1.0 for dropped in drop.tolist()]
            return torch.utils.data.WeightedRandomSampler(weights, len(paths), replacement=True, generator=generator)
        return _IndexSampler(torch.nonzero(~drop).flatten().tolist(), shuffle=shuffle, generator=generator)


class _IndexSampler(Sampler[int]):
    def __init__(self, indices: list[int], *, shuffle: bool, generator: torch.Generator | None) -> None:
        self.indices = indices
        self.shuffle = shuffle
        self.generator = generator

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(self.indices)
        order = torch.randperm(len(self.indices), generator=self.generator).tolist()
        return iter([self.indices[i] for i in order])

    def __len__(self) -> int:
        return len(self.indices)


def _absolute(path: str, base: Path) -> str:
    return os.path.normpath(path if os.path.isabs(path) else os.path.join(base, path))
