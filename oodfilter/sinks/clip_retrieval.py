"""Image embeddings in clip-retrieval's layout: ``img_emb/img_emb_<i>.npy`` + ``metadata/metadata_<i>.parquet``.

clip-retrieval (and DataComp, which follows it) ships embeddings as float16 ``.npy`` shards with one
Parquet metadata file per shard, row for row; for images read from files the metadata holds their path
(``image_path``). oodfilter writes its stored features in that layout (``oodfilter export-features``) and
rescores embeddings found in it (``oodfilter rescore --clip-retrieval DIR --model M``). Such files carry
no fingerprint of the image tower they came from: only the dimension can be checked.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from oodfilter.errors import InputError
from oodfilter.sinks.features import load_features
from oodfilter.sinks.manifest import _require_pyarrow, read_manifest
from oodfilter.sinks.names import arrow_text_column, from_arrow_value
from oodfilter.sinks.row_paths import resolved_paths

PATH_COLUMNS = ("image_path", "url", "key")  # the first one present names each row
_SHARD = re.compile(r"img_emb_(\d+)\.npy$")


def write_clip_retrieval(
    folder: str | Path, paths: list[str], features: np.ndarray, shard_rows: int = 1_000_000
) -> list[Path]:
    """Write (N, D) features and their image paths as clip-retrieval shards; return the ``.npy`` files.

    Raises:
        InputError: ``folder`` already holds clip-retrieval shards (nothing is overwritten).

    """
    pa = _require_pyarrow()
    import pyarrow.parquet as pq

    if shard_rows < 1:
        raise InputError(f"--shard-rows must be at least 1, got {shard_rows}")
    root = Path(folder)
    for part in ("img_emb", "metadata"):
        if (root / part).is_dir() and any((root / part).iterdir()):
            raise InputError(f"{root / part} already holds files; choose an empty folder")
    (root / "img_emb").mkdir(parents=True, exist_ok=True)
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    written = []
    for shard, start in enumerate(range(0, max(len(paths), 1), shard_rows)):
        block = np.asarray(features[start : start + shard_rows], dtype=np.float16)  # (n, D)
        target = root / "img_emb" / f"img_emb_{shard}.npy"
        np.save(target, block)
        table = pa.table({"image_path": arrow_text_column(pa, paths[start : start + shard_rows])})
        pq.write_table(table, root / "metadata" / f"metadata_{shard}.parquet")
        written.append(target)
    return written


def read_clip_retrieval(folder: str | Path) -> tuple[list[str], np.ndarray]:
    """Read every shard of a clip-retrieval embedding folder: the row ids (paths) and (N, D) float32 features.

    Raises:
        InputError: no shards, a shard without its metadata, metadata without a path column, or row
            counts or dimensions that disagree (the message names the file).

    """
    _require_pyarrow()
    import pyarrow.parquet as pq

    root = Path(folder)
    shards = sorted(((int(m.group(1)), p) for p in (root / "img_emb").glob("img_emb_*.npy")
                     if (m := _SHARD.search(p.name))), key=lambda item: item[0])
    if not shards:
        raise InputError(f"{root} holds no clip-retrieval embeddings (expected img_emb/img_emb_0.npy and "
                         "metadata/metadata_0.parquet)")
    ids: list[str] = []
    blocks: list[np.ndarray] = []
    for number, path in shards:
        meta = root / "metadata" / f"metadata_{number}.parquet"
        if not meta.is_file():
            raise InputError(f"{path} has no metadata file {meta}")
        try:
            block = np.load(path, allow_pickle=False)
            table = pq.read_table(meta)
        except Exception as error:  # numpy and pyarrow raise their own error types for damaged files
            raise InputError(f"cannot read {path} or {meta}: {error}") from None
        column = next((name for name in PATH_COLUMNS if name in table.column_names), None)
        if column is None:
            raise InputError(f"{meta} has none of the columns {', '.join(PATH_COLUMNS)} to name its rows")
        if block.ndim != 2 or block.shape[0] != table.num_rows:
            raise InputError(f"{path} holds {block.shape} embeddings but {meta} has {table.num_rows} rows")
        if blocks and block.shape[1] != blocks[0].shape[1]:
            raise InputError(f"{path} has dimension {block.shape[1]}, the other shards {blocks[0].shape[1]}")
        ids += [str(from_arrow_value(value)) for value in table.column(column).to_pylist()]
        blocks.append(block.astype(np.float32))
    features = np.concatenate(blocks)
    if not np.isfinite(features).all():
        raise InputError(f"{root}: some embeddings are not finite numbers")
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return ids, features / np.maximum(norms, 1e-12)  # clip-retrieval normalises; make sure


def export_manifest_features(manifest: str | Path, folder: str | Path, shard_rows: int = 1_000_000) -> list[Path]:
    """Write a manifest's stored features (``scan --save-features``) in clip-retrieval's layout.

    Each ok row becomes one embedding, its ``image_path`` the row's path made absolute from the folder the
    scan ran in. Returns the ``.npy`` shards written.

    Raises:
        InputError: the manifest has no stored features, or ``folder`` already holds shards.

    """
    if not Path(manifest).is_file():
        raise InputError(f"manifest {manifest} does not exist")
    rows = [row for row in read_manifest(manifest) if row.ok]
    features = load_features(manifest, [row.path for row in rows])
    paths = resolved_paths(manifest, rows)
    return write_clip_retrieval(folder, paths, features, shard_rows=shard_rows)
