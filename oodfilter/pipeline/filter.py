"""OODFilter: scores collated batches that carry a CLIP view, then tags them or drops OOD samples."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset, IterableDataset

from oodfilter.data.decode import load_rgb_image
from oodfilter.decision.advice import decision_advice
from oodfilter.decision.calibration import Calibration
from oodfilter.encode_progress import EncodeProgress, as_hooks, reporting_encodes
from oodfilter.errors import InputError
from oodfilter.model.clipn import CLIPN
from oodfilter.pipeline.batches import ClipViewed, select_samples, split_clip_view
from oodfilter.scoring.factory import build_scorer
from oodfilter.scoring.spec import ScorerSpec
from oodfilter.text.templates import DEFAULT_TEMPLATES

MODES = ("tag", "drop")
ImageSource = str | Callable[[Any], Any]


@dataclass
class FilterCounters:
    """Samples seen, kept and dropped so far."""

    seen: int = 0
    kept: int = 0
    dropped: int = 0


class DualViewTransform:
    """Wraps a user's image transform so that one decoded image gives both views.

    ``transform(image)`` returns ``ClipViewed(data=user_transform(image), clip=clip_preprocess(image))``.
    It holds only the two transforms (no model), so it is cheap to send to DataLoader workers.
    """

    def __init__(self, transform: Callable[[Any], Any] | None, clip_preprocess: Callable[[Any], torch.Tensor]):
        self.transform = transform
        self.clip_preprocess = clip_preprocess

    def __call__(self, image: Image.Image) -> ClipViewed:
        """Return both views of ``image``."""
        data = self.transform(image) if self.transform is not None else image
        return ClipViewed(data, self.clip_preprocess(image.convert("RGB")))


class _ClipViewDataset(Dataset[Any]):
    """Map-style dataset whose samples come paired with the filter's CLIP view."""

    def __init__(self, dataset: Dataset[Any], image: ImageSource, clip_preprocess: Callable[[Any], torch.Tensor]):
        self.dataset = dataset
        self.image = image
        self.clip_preprocess = clip_preprocess

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> ClipViewed:
        sample = self.dataset[index]
        return ClipViewed(sample, _clip_view(sample, self.image, self.clip_preprocess))


class _ClipViewIterable(IterableDataset[Any]):
    """Iterable dataset whose samples come paired with the filter's CLIP view."""

    def __init__(self, dataset: Any, image: ImageSource, clip_preprocess: Callable[[Any], torch.Tensor]):
        self.dataset = dataset
        self.image = image
        self.clip_preprocess = clip_preprocess

    def __iter__(self) -> Any:
        for sample in self.dataset:
            yield ClipViewed(sample, _clip_view(sample, self.image, self.clip_preprocess))


def _clip_view(sample: Any, image: ImageSource, clip_preprocess: Callable[[Any], torch.Tensor]) -> torch.Tensor:
    raw = image(sample) if callable(image) else sample[image]
    if isinstance(raw, str | Path):
        raw = load_rgb_image(raw)
    if not isinstance(raw, Image.Image):
        raise InputError(
            f"the filter's image source gave a {type(raw).__name__}; it must give a PIL image or a file path "
            "(the raw image, before the training transform)"
        )
    return clip_preprocess(raw.convert("RGB"))


class OODFilter:
    """Scores batches in the training process and tags them or drops their OOD samples.

    Args:
        model: A loaded CLIPN or anything :func:`oodfilter.load_model` accepts.
        classes: Class names, or a class-list file.
        method: Score method; default ``atd`` when the model has a trained no-branch.
        threshold: Decide ``ood_score > threshold``; needed in drop mode for methods without a rule.
        calibration: A :class:`~oodfilter.decision.Calibration` or its JSON file: decide with its threshold
            (fitted on known ID images for this model, class list, templates and method; checked).
        mode: ``tag`` (add scores) or ``drop`` (remove OOD samples).
        templates: Prompt templates for the class vectors.
        cache_dir: Text-vector cache folder.
        device: Where scoring runs (default: the model's device, CUDA when loaded with ``auto``).
        precision: ``auto`` (bf16 autocast on CUDA, fp32 on the CPU), ``fp32``, ``bf16``, ``fp16`` or ``int8``
            (see :class:`~oodfilter.Scorer`).
        reference: Known in-distribution images (files, folders, globs, or manifests with stored features)
            that the fitted methods (``knn``, ``mahalanobis``) fit on, once, when the filter is built.
        warn_fraction: Warn once per pass when more than this fraction of samples is dropped (a wrong class
            list usually shows up this way).
        min_seen: Samples to see before that warning may fire.
        progress: Told how the class-vector encode goes (captions not yet in the cache), as
            :func:`~oodfilter.build_class_vectors` is: an ``advance(done, total)`` callback or
            :class:`~oodfilter.encode_progress.EncodeHooks`. The command line's display is one:
            ``with TaskProgress("filter", quiet=False) as bar, bar.encodes(): OODFilter(...)``
            (``oodfilter.cli.progress``) shows a bar and the estimate. Default: the hooks installed by
            :func:`~oodfilter.encode_progress.reporting_encodes`, if any; else only logging.

    """

    def __init__(
        self,
        model: CLIPN | str,
        classes: Sequence[str] | str | Path,
        *,
        method: str | None = None,
        threshold: float | None = None,
        calibration: Calibration | str | Path | None = None,
        mode: str = "tag",
        templates: str | Sequence[str] = DEFAULT_TEMPLATES,
        cache_dir: str | Path | None = None,
        device: str | torch.device | None = None,
        precision: str = "auto",
        reference: Sequence[str | Path] = (),
        warn_fraction: float = 0.5,
        min_seen: int = 64,
        progress: EncodeProgress | None = None,
    ) -> None:
        if mode not in MODES:
            raise InputError(f"mode must be 'tag' or 'drop', got '{mode}'")
        spec = ScorerSpec(
            model=model if isinstance(model, str) else model.source.name,
            classes=str(classes) if isinstance(classes, Path) else classes, method=method, templates=templates,
            threshold=threshold, require_decisions=mode == "drop", decisions_for="drop mode",
            calibration=str(calibration) if isinstance(calibration, Path) else calibration,
            device=str(device) if device is not None else "auto", precision=precision, batch_size=1024,
            cache_dir=str(cache_dir) if cache_dir is not None else None,
            reference=tuple(str(item) for item in reference),
        )
        with reporting_encodes(as_hooks(progress)):
            self.scorer = build_scorer(spec, model=None if isinstance(model, str) else model)
        rule_decides = self.scorer.threshold is None and self.scorer.method.threshold_free
        for message in decision_advice(self.scorer.method.name, len(self.scorer.class_vectors),
                                       rule_decides=rule_decides):
            warnings.warn(message, stacklevel=2)
        self.model = self.scorer.model
        self.method = self.scorer.method.name
        self.mode = mode
        self.warn_fraction = warn_fraction
        self.min_seen = min_seen
        self.counters = FilterCounters()
        self._warned = False

    @property
    def clip_preprocess(self) -> Callable[[Any], torch.Tensor]:
        """The model's own eval transform (PIL image → (3, H, W))."""
        return self.model.preprocess

    def wrap_transform(self, transform: Callable[[Any], Any] | None) -> DualViewTransform:
        """Wrap a dataset's image transform so each decoded image also yields the filter's CLIP view.

        Use it where a dataset applies ``transform`` to a PIL image (torchvision's ``ImageFolder`` and
        most datasets): ``dataset.transform = ood_filter.wrap_transform(dataset.transform)``.
        """
        return DualViewTransform(transform, self.clip_preprocess)

    def wrap_dataset(self, dataset: Any, image: ImageSource) -> Dataset[Any]:
        """Pair each sample of ``dataset`` with the CLIP view of its raw image.

        Args:
            dataset: A map-style or iterable dataset; it stays unchanged.
            image: A key of dict samples, or a function of the sample, giving a PIL image or a file path.

        """
        if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__getitem__"):
            return _ClipViewIterable(dataset, image, self.clip_preprocess)
        return _ClipViewDataset(dataset, image, self.clip_preprocess)

    def start_pass(self) -> None:
        """Re-arm the high-drop warning (called at the start of each pass over the data)."""
        self._warned = False

    def process(self, batch: Any) -> Any | None:
        """Score one collated batch and return it tagged, filtered, or None when every sample was dropped.

        Tag mode: a dict batch gets ``ood_score`` and ``is_ood`` entries; any other batch is returned as
        ``(batch, {"ood_score": ..., "is_ood": ...})``. Drop mode: the OOD samples are removed.

        Raises:
            InputError: the batch carries no CLIP view (wrap the transform or dataset first).

        """
        data, views = split_clip_view(batch)
        if views is None:
            raise InputError(
                "this batch has no CLIP view for the OOD filter: wrap the dataset's transform with "
                "ood_filter.wrap_transform(...) or the dataset with ood_filter.wrap_dataset(...)"
            )
        result = self.scorer.score_images(views)
        size = len(result)
        self.counters.seen += size
        if self.mode == "tag":
            self.counters.kept += size
            info = {"ood_score": result.ood_score, "is_ood": result.is_ood}
            if isinstance(data, Mapping):
                return {**data, **info}
            return data, info
        if result.is_ood is None:  # guarded in __init__; kept for type narrowing
            raise InputError("drop mode needs decisions")
        keep = ~result.is_ood
        kept = int(keep.sum())
        self.counters.kept += kept
        self.counters.dropped += size - kept
        self._maybe_warn()
        if kept == 0:
            return None
        return data if kept == size else select_samples(data, keep)

    def _maybe_warn(self) -> None:
        seen, dropped = self.counters.seen, self.counters.dropped
        if not self._warned and seen >= self.min_seen and dropped > self.warn_fraction * seen:
            self._warned = True
            warnings.warn(
                f"the OOD filter dropped {dropped} of {seen} samples ({dropped / seen:.0%}); a wrong or "
                "incomplete class list usually shows up this way",
                stacklevel=3,
            )


