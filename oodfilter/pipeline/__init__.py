"""OOD filtering inside training pipelines: DataLoader wrappers, manifest-based filtering, torchdata nodes.

``OODFilterNode`` lives in :mod:`oodfilter.pipeline.nodes` (it needs the optional ``torchdata``).
"""

from oodfilter.pipeline.batches import ClipViewed
from oodfilter.pipeline.filter import DualViewTransform, FilterCounters, OODFilter
from oodfilter.pipeline.loader import FilteredLoader
from oodfilter.pipeline.manifest_filter import ManifestFilter, dataset_paths

__all__ = [
    "ClipViewed",
    "DualViewTransform",
    "FilterCounters",
    "FilteredLoader",
    "ManifestFilter",
    "OODFilter",
    "dataset_paths",
]
