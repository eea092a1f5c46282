"""Class vectors: class names × templates → yes/no classifier matrices, cached on disk."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
import torch
import torch.nn.functional as F

from oodfilter.cache_dir import CACHE_ENV, default_cache_dir
from oodfilter.encode_progress import EncodeProgress, as_hooks
from oodfilter.errors import InputError
from oodfilter.model.clipn import CLIPN
from oodfilter.text.cache import TextCache, text_key
from oodfilter.text.classes import clean_class_names
from oodfilter.text.encoding import encode_caption_sets, encode_captions, text_precision
from oodfilter.text.templates import DEFAULT_TEMPLATES, resolve_template_choice, resolve_templates

logger = logging.getLogger(__name__)

# The cache root moved to oodfilter.cache_dir (the model cache shares it); both names stay importable here.
__all__ = ["CACHE_ENV", "ClassVectors", "build_class_vectors", "default_cache_dir", "encode_captions", "text_precision"]


@dataclass
class ClassVectors:
    """Classifier matrices for a class list, and a FAISS index for nearest-name queries.

    Attributes:
        class_names: The C class names, in the user's order.
        templates: The templates averaged into each class vector.
        yes: (C, D) float32, L2-normalised yes-tower class vectors W_yes.
        no: (C, D) float32, L2-normalised no-tower class vectors W_no, or None without a no-branch.
        fingerprints: Tower fingerprint per tower (``yes``, ``no``), identifying the model.

    """

    class_names: list[str]
    templates: tuple[str, ...]
    yes: torch.Tensor
    no: torch.Tensor | None
    fingerprints: dict[str, str]
    _search: faiss.Index | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.class_names)

    @property
    def dim(self) -> int:
        """Embedding dimension D."""
        return int(self.yes.shape[1])

    def search_index(self) -> faiss.Index:
        """Return the FAISS inner-product index over the yes class vectors (built once)."""
        if self._search is None:
            index = faiss.IndexFlatIP(self.dim)
            index.add(np.ascontiguousarray(self.yes.numpy(), dtype=np.float32))
            self._search = index
        return self._search

    def nearest_classes(self, image_features: torch.Tensor | np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """Return the ``k`` classes nearest to each image as (cosines (B, k), class indices (B, k)).

        One FAISS query for the whole batch; rows are sorted by decreasing cosine.
        """
        if isinstance(image_features, torch.Tensor):
            image_features = image_features.detach().to("cpu", torch.float32).numpy()
        queries = np.ascontiguousarray(image_features, dtype=np.float32)  # (B, D)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise InputError(f"image features must be (B, {self.dim}); got {queries.shape}")
        cosines, indices = self.search_index().search(queries, min(k, len(self)))
        return cosines, indices


def build_class_vectors(
    model: CLIPN,
    class_names: Sequence[str],
    *,
    templates: str | Sequence[str] = DEFAULT_TEMPLATES,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    batch_size: int = 256,
    include_no: bool | None = None,
    precision: str = "auto",
    progress: EncodeProgress | None = None,
) -> ClassVectors:
    """Encode ``class_names`` × ``templates`` with the yes and no towers into a :class:`ClassVectors`.

    Per-caption vectors are cached on disk under ``cache_dir/text/<tower fingerprint>``, so a second
    run with the same model encodes nothing and a different model never reuses another's vectors.
    Each class vector is the normalised mean of its normalised caption vectors (docs/method.md §3).
    Captions are encoded in batches cut to their longest caption (see :mod:`oodfilter.text.encoding`).

    Args:
        model: The CLIPN model (its device is used for encoding).
        class_names: In-distribution class names (cleaned; duplicates warned about).
        templates: A template set name (``auto``: ``clipn`` for a model with a trained no-branch, else
            ``photo``) or a list of templates with one ``{}``.
        cache_dir: Cache root; default ``$OODFILTER_CACHE_DIR`` or the user's cache folder.
        use_cache: Set False to encode everything and write nothing.
        batch_size: Captions per encoder call.
        include_no: Encode the no tower too; default: when the model's no-branch is trained (an
            untrained copy would only repeat the yes vectors).
        precision: ``auto`` (the default: bf16 on CUDA, fp32 on the CPU), ``fp32``, ``bf16``, ``fp16`` (CUDA)
            or ``int8`` (text in fp32), resolved for the model's device by
            :func:`text_precision`: the rules of scoring, so that a :class:`~oodfilter.Scorer` built with the
            same precision encodes images as its class vectors were. Vectors encoded in a reduced precision
            are cached apart from fp32 ones.
        progress: Told how the encode of the captions missing from the cache goes (both towers together): an
            ``advance(done, total)`` callback or :class:`~oodfilter.encode_progress.EncodeHooks` (default: the
            hooks installed by :func:`~oodfilter.encode_progress.reporting_encodes`, if any). Nothing is
            reported when every vector comes from the cache.

    """
    names = clean_class_names(class_names)
    with_no = model.no_branch_trained if include_no is None else include_no
    chosen = resolve_templates(resolve_template_choice(templates, clipn_model=model.no_branch_trained))
    root = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "text"
    encoding = text_precision(model.device, precision)
    lookups: list[_TowerLookup] = []
    fingerprints: dict[str, str] = {}
    for tower in ["yes", "no"] if with_no else ["yes"]:
        fingerprints[tower] = model.text_fingerprint(tower)
        folder = fingerprints[tower][:40] + ("" if encoding == "fp32" else f"-{encoding}")
        store = TextCache(root / folder, fingerprints[tower], model.embed_dim) if use_cache else None
        lookups.append(_look_up(model, tower, names, chosen, store))
    _encode_missing(model, lookups, batch_size, encoding, progress)
    matrices = {lookup.tower: _class_matrix(lookup.vectors, len(chosen), len(names)) for lookup in lookups}
    return ClassVectors(class_names=names, templates=chosen, yes=matrices["yes"], no=matrices.get("no"),
                        fingerprints=fingerprints)


@dataclass
class _TowerLookup:
    """One tower's caption vectors for a build: those found in its cache, and the captions still to encode."""

    tower: str
    store: TextCache | None
    keys: list[int]  # (T*C,), template-major
    vectors: np.ndarray  # (T*C, D), zeros where missing
    missing: np.ndarray  # positions not found
    unique: dict[int, int]  # key -> first missing position with it (repeated class names share a key)
    captions: list[str]  # the captions of ``unique``, in its order


def _look_up(model: CLIPN, tower: str, names: list[str], templates: tuple[str, ...],
             store: TextCache | None) -> _TowerLookup:
    """Find one tower's caption vectors in its cache; list the distinct captions still to encode."""
    fingerprint = model.text_fingerprint(tower)
    captions = [template.format(name) for template in templates for name in names]  # T*C, template-major
    keys = [text_key(fingerprint, tower, template, name) for template in templates for name in names]
    if store is not None:
        found, vectors = store.lookup(keys)
    else:
        found, vectors = np.zeros(len(keys), dtype=bool), np.zeros((len(keys), model.embed_dim), np.float32)
    missing = np.flatnonzero(~found)
    unique: dict[int, int] = {}
    for position in missing:
        unique.setdefault(keys[position], int(position))
    return _TowerLookup(tower, store, keys, vectors, missing, unique, [captions[i] for i in unique.values()])


def _encode_missing(model: CLIPN, lookups: list[_TowerLookup], batch_size: int, precision: str,
                    progress: EncodeProgress | None) -> None:
    """Encode every tower's missing captions as one piece of work (one count, one estimate); fill and cache them.

    Each tower's vectors are cached as soon as that tower is done, so an interrupted build keeps them.
    """
    todo = [lookup for lookup in lookups if lookup.captions]
    if not todo:
        return
    for lookup in todo:
        _warn_if_long(model, lookup.tower, len(lookup.captions))

    def keep(index: int, vectors: np.ndarray) -> None:
        lookup = todo[index]
        by_key = dict(zip(lookup.unique, vectors, strict=True))
        lookup.vectors[lookup.missing] = np.stack([by_key[lookup.keys[i]] for i in lookup.missing])
        if lookup.store is not None:
            lookup.store.add(list(lookup.unique), vectors)
            lookup.store.save()
        found = len(lookup.keys) - len(lookup.missing)
        logger.info("encoded %d %s-tower captions (%d from cache)", len(lookup.captions), lookup.tower, found)

    encode_caption_sets(model, [(lookup.tower, lookup.captions) for lookup in todo], batch_size, precision=precision,
                        progress=as_hooks(progress), on_encoded=keep)


def _class_matrix(vectors: np.ndarray, templates: int, names: int) -> torch.Tensor:
    """(C, D) normalised mean over templates of the normalised caption vectors (T*C, D), template-major."""
    per_template = torch.from_numpy(vectors).view(templates, names, -1)  # (T, C, D)
    return F.normalize(F.normalize(per_template, dim=-1).mean(dim=0), dim=-1)  # (C, D)


# Above this many captions to encode on a CPU, say what it costs and how to make it cheaper.
LONG_ENCODE_CAPTIONS = 20_000


def _warn_if_long(model: CLIPN, tower: str, count: int) -> None:
    if count > LONG_ENCODE_CAPTIONS and model.device.type == "cpu":
        warnings.warn(
            f"encoding {count} {tower}-tower captions on the CPU: a one-time cost (cached afterwards) that can take "
            "hours for a ViT-B text tower (measured: 13-25 captions/s per tower on 2 busy cores); the 128-template "
            "'clipn' set makes 128 captions per class, so pass --templates photo (templates='photo') for a build "
            "128 times cheaper, or run on a GPU",
            stacklevel=4,
        )
