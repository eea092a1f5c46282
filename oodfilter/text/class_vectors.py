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
from oodfilter.device import inference_precision, maybe_autocast, precision_dtype
from oodfilter.errors import InputError
from oodfilter.model.clipn import CLIPN
from oodfilter.text.cache import TextCache, text_key
from oodfilter.text.classes import clean_class_names
from oodfilter.text.templates import DEFAULT_TEMPLATES, resolve_template_choice, resolve_templates

logger = logging.getLogger(__name__)

# The cache root moved to oodfilter.cache_dir (the model cache shares it); both names stay importable here.
__all__ = ["CACHE_ENV", "ClassVectors", "build_class_vectors", "default_cache_dir", "encode_captions"]


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
        """Return the ``k`` class names nearest to each image as (cosines (B, k), class indices (B, k)).

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
) -> ClassVectors:
    """Encode ``class_names`` × ``templates`` with the yes and no towers into a :class:`ClassVectors`.

    Per-caption vectors are cached on disk under ``cache_dir/text/<tower fingerprint>``, so a second
    run with the same model encodes nothing and a different model never reuses another's vectors.
    Each class vector is the normalised mean of its normalised caption vectors (docs/method.md §3).

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

    """
    names = clean_class_names(class_names)
    with_no = model.no_branch_trained if include_no is None else include_no
    chosen = resolve_templates(resolve_template_choice(templates, clipn_model=model.no_branch_trained))
    root = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "text"
    encoding = text_precision(model.device, precision)
    matrices: dict[str, torch.Tensor] = {}
    fingerprints: dict[str, str] = {}
    for tower in ["yes", "no"] if with_no else ["yes"]:
        fingerprints[tower] = model.text_fingerprint(tower)
        folder = fingerprints[tower][:40] + ("" if encoding == "fp32" else f"-{encoding}")
        store = TextCache(root / folder, fingerprints[tower], model.embed_dim) if use_cache else None
        matrices[tower] = _class_matrix(model, tower, names, chosen, store, batch_size, encoding)
    return ClassVectors(class_names=names, templates=chosen, yes=matrices["yes"], no=matrices.get("no"),
                        fingerprints=fingerprints)


def text_precision(device: torch.device, precision: str) -> str:
    """Return the precision text is encoded in when scoring in ``precision`` on ``device``.

    Scoring's rules (:func:`oodfilter.device.inference_precision`), except that ``int8`` (an image-tower
    setting) encodes text in fp32.
    """
    return "fp32" if precision == "int8" else inference_precision(device, precision, warn=False)


def _class_matrix(
    model: CLIPN, tower: str, names: list[str], templates: tuple[str, ...], store: TextCache | None, batch_size: int,
    precision: str = "fp32",
) -> torch.Tensor:
    """(C, D) normalised mean over templates of the normalised caption vectors of one tower."""
    fingerprint = model.text_fingerprint(tower)
    captions = [template.format(name) for template in templates for name in names]  # T*C, template-major
    keys = [text_key(fingerprint, tower, template, name) for template in templates for name in names]
    vectors = _cached_or_encoded(model, tower, captions, keys, store, batch_size, precision)  # (T*C, D)
    per_template = torch.from_numpy(vectors).view(len(templates), len(names), -1)  # (T, C, D)
    return F.normalize(F.normalize(per_template, dim=-1).mean(dim=0), dim=-1)  # (C, D)


def _cached_or_encoded(
    model: CLIPN,
    tower: str,
    captions: list[str],
    keys: list[int],
    store: TextCache | None,
    batch_size: int,
    precision: str = "fp32",
) -> np.ndarray:
    if store is not None:
        found, vectors = store.lookup(keys)
    else:
        found, vectors = np.zeros(len(keys), dtype=bool), np.zeros((len(keys), model.embed_dim), np.float32)
    missing = np.flatnonzero(~found)
    if missing.size:
        # Encode each distinct missing caption once (repeated class names share a key).
        unique: dict[int, int] = {}
        for position in missing:
            unique.setdefault(keys[position], int(position))
        order = list(unique.values())
        _warn_if_long(model, tower, len(order))
        encoded = encode_captions(model, tower, [captions[i] for i in order], batch_size, precision=precision)
        by_key = dict(zip(unique, encoded, strict=True))
        vectors[missing] = np.stack([by_key[keys[i]] for i in missing])
        if store is not None:
            store.add(list(unique), encoded)
            store.save()
        logger.info("encoded %d %s-tower captions (%d from cache)", len(order), tower, int(found.sum()))
    return vectors


# Above this many captions to encode on a CPU, say what it costs and how to make it cheaper.
LONG_ENCODE_CAPTIONS = 20_000


def _warn_if_long(model: CLIPN, tower: str, count: int) -> None:
    if count > LONG_ENCODE_CAPTIONS and model.device.type == "cpu":
        warnings.warn(
            f"encoding {count} {tower}-tower captions on the CPU: a one-time cost (cached afterwards) that can take "
            "hours for a ViT-B text tower (measured: ~3 captions/s per tower on 2 busy cores); the 128-template "
            "'clipn' set makes 128 captions per class, so pass --templates photo (templates='photo') for a build "
            "128 times cheaper, or run on a GPU",
            stacklevel=4,
        )


@torch.no_grad()
def encode_captions(
    model: CLIPN, tower: str, captions: Sequence[str], batch_size: int = 256, *, precision: str = "auto"
) -> np.ndarray:
    """Encode captions with the ``yes`` or ``no`` tower in batches → (N, D) float32, L2-normalised.

    ``precision`` (``auto``, ``fp32``, ``bf16``, ``fp16``) is resolved by :func:`text_precision`.
    """
    dtype = precision_dtype(text_precision(model.device, precision))
    was_training = model.training
    model.eval()
    try:
        chunks = []
        for start in range(0, len(captions), batch_size):
            tokens = model.tokenize(captions[start : start + batch_size])
            with maybe_autocast(model.device, dtype):
                encoded = model.encode(tokens, tower)
            chunks.append(F.normalize(encoded.float(), dim=-1).cpu())
        return torch.cat(chunks).numpy() if chunks else np.zeros((0, model.embed_dim), np.float32)
    finally:
        model.train(was_training)
