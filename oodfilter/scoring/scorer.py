"""The Scorer: images (or image features) → OOD scores, batched, on a device, with AMP on CUDA."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from oodfilter.data.encode import image_batches
from oodfilter.data.files import DecodedBatch
from oodfilter.device import autocast_dtype, maybe_autocast, resolve_device
from oodfilter.errors import InputError, ModelMismatchError
from oodfilter.model.clipn import CLIPN
from oodfilter.scoring import functional as fn
from oodfilter.scoring.methods import FeatureBatch, ScoreMethod, ScoringContext, scorers
from oodfilter.text.index import TextIndex

# Features scored per step: bounds the (B, C) cosine matrices for large vocabularies.
_FEATURE_CHUNK = 4096


@dataclass
class ScoreResult:
    """Scores of N images (CPU tensors), in input order.

    Attributes:
        method: The score method's name.
        ood_score: (N,) float, higher = more OOD.
        is_ood: (N,) bool decisions (threshold-free rule or the given threshold), or None.
        top_class: (N,) long index of the most likely ID class.
        top_prob: (N,) its softmax probability under the yes classifier.
        class_names: The C class names ``top_class`` indexes.

    """

    method: str
    ood_score: torch.Tensor
    is_ood: torch.Tensor | None
    top_class: torch.Tensor
    top_prob: torch.Tensor
    class_names: list[str]

    def __len__(self) -> int:
        return int(self.ood_score.shape[0])

    @property
    def top_class_names(self) -> list[str]:
        """The most likely ID class name of each image."""
        return [self.class_names[i] for i in self.top_class.tolist()]


@dataclass
class ImageScore:
    """One row per input path: ``status`` is ``ok`` (scores set) or ``error`` (``error`` set)."""

    path: str
    status: str
    error: str | None = None
    ood_score: float | None = None
    is_ood: bool | None = None
    top_class: str | None = None
    top_prob: float | None = None


class Scorer:
    """Scores images against a class list with one score method.

    Args:
        model: The CLIPN model.
        text_index: Class vectors built by :func:`oodfilter.build_text_index` from the same model.
        method: A registered score name (``atd``, ``ctw``, ``msp``, ``maxlogit``, ``energy``, ``mcm``,
            plugins) or a :class:`ScoreMethod` instance.
        threshold: Decide ``is_ood = ood_score > threshold``; without it, threshold-free methods use
            their own rule and others give no decision.
        device: Where to run; default the model's device.
        batch_size: Images per forward pass.
        precision: ``auto`` (bf16/fp16 autocast on CUDA, fp32 on CPU), ``fp32``, ``fp16`` or ``bf16``.
        allow_untrained_no_branch: Permit CLIPN methods with a no-branch that was never trained.
        cache_dir: Cache root for methods that prepare state (mined negatives, probes).
        reference_features: Unlabelled ID image features for methods that fit on them (see
            :class:`~oodfilter.scoring.methods.ScoringContext`).

    Raises:
        ModelMismatchError: the text index was built with a different model.
        InputError: the method needs a trained no-branch that the model lacks.

    """

    def __init__(
        self,
        model: CLIPN,
        text_index: TextIndex,
        method: str | ScoreMethod = "atd",
        *,
        threshold: float | None = None,
        device: str | torch.device | None = None,
        batch_size: int = 64,
        precision: str = "auto",
        allow_untrained_no_branch: bool = False,
        cache_dir: str | Path | None = None,
        reference_features: torch.Tensor | None = None,
    ) -> None:
        self.method = scorers.create(method) if isinstance(method, str) else method
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        _check_compatible(model, text_index, self.method, allow_untrained_no_branch)
        self.device = resolve_device(device) if device is not None else model.device
        self.model = model.to(self.device).eval()
        self.text_index = text_index
        self.threshold = threshold
        self.batch_size = batch_size
        self.amp_dtype = autocast_dtype(self.device, precision)
        self._yes = text_index.yes.to(self.device)  # (C, D)
        self._no = text_index.no.to(self.device) if text_index.no is not None else None  # (C, D)
        self.method.prepare(ScoringContext(model=self.model, text_index=text_index, device=self.device,
                                           cache_dir=Path(cache_dir) if cache_dir is not None else None,
                                           reference_features=reference_features))
        if self.method.name == "atd" and len(text_index) == 1:
            warnings.warn(
                "ATD with a single class reduces to that class's yes-probability; list more ID classes "
                "or use ctw",
                stacklevel=2,
            )

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Encode preprocessed images (N, 3, H, W) in batches → (N, D) float32 normalised features (CPU)."""
        chunks = []
        for start in range(0, images.shape[0], self.batch_size):
            batch = images[start : start + self.batch_size].to(self.device, non_blocking=True)
            with maybe_autocast(self.device, self.amp_dtype):
                features = self.model.encode_image(batch)
            chunks.append(torch.nn.functional.normalize(features.float(), dim=-1).cpu())
        return torch.cat(chunks) if chunks else torch.zeros(0, self.model.embed_dim)

    @torch.no_grad()
    def score_features(self, features: torch.Tensor) -> ScoreResult:
        """Score precomputed normalised image features (N, D)."""
        step = _FEATURE_CHUNK
        parts = [self._score_batch(features[i : i + step]) for i in range(0, len(features), step)]
        if not parts:
            parts = [self._score_batch(features.new_zeros(0, self.text_index.dim))]
        decisions = [p[1] for p in parts]
        return ScoreResult(
            method=self.method.name,
            ood_score=torch.cat([p[0] for p in parts]),
            is_ood=None if any(d is None for d in decisions) else torch.cat(decisions),  # type: ignore[arg-type]
            top_class=torch.cat([p[2] for p in parts]),
            top_prob=torch.cat([p[3] for p in parts]),
            class_names=self.text_index.class_names,
        )

    def _score_batch(
        self, features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
        f = features.to(self.device, torch.float32)  # (B, D)
        batch = FeatureBatch(
            features=f,
            cosines_yes=f @ self._yes.T,  # (B, C)
            cosines_no=f @ self._no.T if self._no is not None else None,  # (B, C)
            logit_scale=self.model.logit_scale,
        )
        output = self.method(batch)
        top, top_prob = fn.top_class(batch.logits_yes)
        decision = output.ood_score > self.threshold if self.threshold is not None else output.is_ood
        return (
            output.ood_score.float().cpu(),
            decision.cpu() if decision is not None else None,
            top.cpu(),
            top_prob.float().cpu(),
        )

    def score_images(self, images: torch.Tensor) -> ScoreResult:
        """Score preprocessed images (N, 3, H, W)."""
        return self.score_features(self.encode_images(images))

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Apply the model's eval transform to PIL images → (N, 3, H, W)."""
        if self.model.preprocess is None:
            raise InputError("this model has no image transform; pass preprocessed tensors to score_images")
        return torch.stack([self.model.preprocess(image) for image in images])

    def score_decoded(self, paths: Sequence[str], batch: DecodedBatch) -> list[ImageScore]:
        """Turn one decoded batch of ``paths`` into rows, in input order: ``ok`` rows scored, ``error`` rows kept."""
        rows = {index: ImageScore(path=paths[index], status="error", error=reason) for index, reason in batch.errors}
        if batch.images is not None:
            result = self.score_images(batch.images)
            names = result.top_class_names
            for position, index in enumerate(batch.ok):
                rows[index] = ImageScore(
                    path=paths[index],
                    status="ok",
                    ood_score=float(result.ood_score[position]),
                    is_ood=bool(result.is_ood[position]) if result.is_ood is not None else None,
                    top_class=names[position],
                    top_prob=float(result.top_prob[position]),
                )
        return [rows[index] for index in sorted(rows)]

    def score_paths(self, paths: Sequence[str | Path]) -> list[ImageScore]:
        """Score image files; a file that cannot be decoded gives an ``error`` row, never an exception."""
        if self.model.preprocess is None:
            raise InputError("this model has no image transform; pass preprocessed tensors to score_images")
        names = [str(p) for p in paths]
        rows: list[ImageScore] = []
        for batch in image_batches(names, self.model.preprocess, batch_size=self.batch_size, workers=0):
            rows.extend(self.score_decoded(names, batch))
        return rows


def _check_compatible(
    model: CLIPN, text_index: TextIndex, method: ScoreMethod, allow_untrained_no_branch: bool
) -> None:
    if text_index.fingerprints.get("yes") != model.text_fingerprint("yes"):
        raise ModelMismatchError(
            "the text index was built with a different model; rebuild it with build_text_index(model, ...)"
        )
    if not method.needs_no_branch:
        return
    if not model.no_branch_trained and not allow_untrained_no_branch:
        plain = ", ".join(name for name in scorers.list() if not scorers.get(name).needs_no_branch)
        raise InputError(
            f"method '{method.name}' needs a trained CLIPN no-branch, and model '{model.source.name}' has "
            f"none (load a CLIPN bundle, convert the reference release with 'oodfilter convert-clipn', or "
            f"train one with 'oodfilter finetune'); or pick a method that needs none: {plain}"
        )
    if text_index.no is None:
        raise InputError(f"method '{method.name}' needs no-branch class vectors; build the index with include_no=True")
    if text_index.fingerprints.get("no") != model.text_fingerprint("no"):
        raise ModelMismatchError("the text index's no-vectors come from a different no-branch; rebuild the index")
