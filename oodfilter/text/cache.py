"""An on-disk store of text vectors for one text tower, kept in a FAISS index.

Vectors are addressed by a 63-bit key derived from (tower fingerprint, template, class name) and held in
a ``faiss.IndexIDMap2`` over an inner-product flat index, so the store can be searched as it is. Each
store belongs to exactly one tower fingerprint and dimension, recorded in ``meta.json``; opening it with
another refuses. Files are replaced atomically (write to a temporary file, then rename).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from oodfilter.atomic import atomic_write, atomic_write_text
from oodfilter.errors import CheckpointError, ModelMismatchError
from oodfilter.json_parse import parse_json

INDEX_FILE = "vectors.faiss"
META_FILE = "meta.json"
STORE_VERSION = 1


def text_key(fingerprint: str, tower: str, template: str, name: str) -> int:
    """Return the 63-bit store key of one caption's vector."""
    digest = hashlib.sha256("\x1f".join((fingerprint, tower, template, name)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


class TextCache:
    """Vectors of one text tower by key, persisted as a FAISS index.

    Args:
        folder: Where ``vectors.faiss`` and ``meta.json`` live (created on first save).
        fingerprint: The tower fingerprint these vectors belong to.
        dim: Vector dimension.

    Raises:
        ModelMismatchError: the folder holds vectors of another fingerprint or dimension.
        CheckpointError: the folder's files are unreadable.

    """

    def __init__(self, folder: str | Path, fingerprint: str, dim: int) -> None:
        self.folder = Path(folder)
        self.fingerprint = fingerprint
        self.dim = dim
        self._rows: dict[int, int] = {}
        self._pending = 0
        self.index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        if (self.folder / META_FILE).is_file():
            self._open_existing()

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def _open_existing(self) -> None:
        meta_path = self.folder / META_FILE
        try:
            meta = parse_json(meta_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CheckpointError(f"text cache {meta_path} is unreadable ({error}); delete {self.folder}") from error
        if not isinstance(meta, dict) or isinstance(meta.get("dim"), bool) or not isinstance(meta.get("dim"), int):
            raise CheckpointError(f"text cache {meta_path} is not a cache's metadata (an object with an integer "
                                  f"'dim'); delete {self.folder}")
        if meta.get("fingerprint") != self.fingerprint:
            raise ModelMismatchError(
                f"text cache {self.folder} belongs to model fingerprint {str(meta.get('fingerprint'))[:16]}..., "
                f"not {self.fingerprint[:16]}...; it will not be mixed. Use another cache folder."
            )
        if meta["dim"] != self.dim:
            raise ModelMismatchError(
                f"text cache {self.folder} holds {meta.get('dim')}-d vectors, the model makes {self.dim}-d ones"
            )
        index_path = self.folder / INDEX_FILE
        if not index_path.is_file():
            return
        try:
            index = faiss.read_index(str(index_path))
        except RuntimeError as error:
            raise CheckpointError(f"text cache {index_path} is corrupt ({error}); delete {self.folder}") from error
        if index.d != self.dim:
            raise ModelMismatchError(f"text cache {index_path} holds {index.d}-d vectors, expected {self.dim}-d")
        self.index = faiss.IndexIDMap2(index) if not isinstance(index, faiss.IndexIDMap2) else index
        ids = faiss.vector_to_array(self.index.id_map)
        self._rows = {int(key): row for row, key in enumerate(ids)}

    def lookup(self, keys: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Return (found mask (N,), vectors (N, D) float32 with zeros where not found)."""
        found = np.array([key in self._rows for key in keys], dtype=bool)
        vectors = np.zeros((len(keys), self.dim), dtype=np.float32)
        if found.any():
            rows = np.array([self._rows[key] for key, hit in zip(keys, found, strict=True) if hit], dtype=np.int64)
            vectors[found] = self.index.index.reconstruct_batch(rows)
        return found, vectors

    def add(self, keys: Sequence[int], vectors: np.ndarray) -> None:
        """Add vectors (N, D) under new keys; keys already present are skipped."""
        fresh = [i for i, key in enumerate(keys) if key not in self._rows]
        if not fresh:
            return
        new_keys = np.asarray([keys[i] for i in fresh], dtype=np.int64)
        new_vectors = np.ascontiguousarray(vectors[fresh], dtype=np.float32)
        start = len(self)
        self.index.add_with_ids(new_vectors, new_keys)
        for offset, key in enumerate(new_keys):
            self._rows[int(key)] = start + offset
        self._pending += len(fresh)

    def save(self) -> None:
        """Write the index and its metadata atomically, if anything was added since the last save."""
        if not self._pending and (self.folder / INDEX_FILE).is_file():
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        meta: dict[str, Any] = {"version": STORE_VERSION, "fingerprint": self.fingerprint, "dim": self.dim}
        atomic_write_text(self.folder / META_FILE, json.dumps(meta))
        atomic_write(self.folder / INDEX_FILE, lambda tmp: faiss.write_index(self.index, tmp))
        self._pending = 0
