"""Stored image embeddings beside a manifest: pay for the image encoder once, rescore in seconds.

``<out>.features.<id>.f16`` holds one L2-normalised image embedding per ``ok`` row of the manifest, in the
manifest's row order, as raw little-endian float16 (N, D); ``<out>.features.json`` says what they are
(dimension, dtype, the image tower's fingerprint, the model). Raw rows rather than ``.npy``: a batch is
appended and fsync'd *before* its manifest rows, so after a crash the file holds at least as many rows
as the manifest has ok rows, and a resume cuts it back to exactly that many; ``.npy`` cannot be appended
without rewriting its header. The file is memory-mapped for reading, so rescoring millions of rows
streams. float16 costs 2·D bytes per image (1 KiB for D = 512); it moves a cosine by ~1e-5, so a score by
that times the model's logit scale (measured: 3.7e-4 for energy on a ViT-B-32 at scale 14, up to ~1e-2 for
max-logit at scale 100).

Every feature row is bound to its manifest row: ``<out>.features.<id>.keys`` holds an 8-byte digest of
each ok row's path, in the same order, written after the batch's features and before its manifest rows.
Every reader checks that the manifest's ok rows carry those paths, so a manifest edited by hand (a row
removed, added or moved) or a header naming another scan's features is refused, never shifted onto a
neighbour's features. A file's position is its ok-row index; the digest says which row it is.

Every manifest has a data file of its own name. A rescored manifest hard-links its source's rows (a
copy where links do not work), so ``--overwrite`` only ever removes a manifest's own name, and features
that another manifest still uses stay on disk. Every fresh scan writes a new data file
(``<out>.features.<id>.f16``) rather than rewriting the old one in place. The header names the file
relative to its own folder, so a scan folder can be moved.

Headers of format ``oodfilter-features/1`` (before rows were bound) are still read: their rows are matched
by position, and only the row count can be checked (it must equal the manifest's ok rows), with a
warning; a rescore of such a manifest writes a bound one, and a resume binds it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from oodfilter.atomic import atomic_write_text
from oodfilter.config import PRECISIONS
from oodfilter.errors import InputError
from oodfilter.json_parse import parse_json
from oodfilter.messages import excerpt
from oodfilter.outputs import os_error
from oodfilter.real_path import real_path
from oodfilter.sinks.manifest import read_manifest, sidecar
from oodfilter.sinks.rows import ManifestRow

if TYPE_CHECKING:  # tensors come in from the scorer; reading features back needs no torch (rescore's checks)
    import torch

FORMAT = "oodfilter-features/2"
LEGACY_FORMAT = "oodfilter-features/1"  # rows matched by position only
DTYPE = np.dtype("<f2")
KEY_BYTES = 8  # per row: blake2b of its path; a collision between two rows' paths has odds ~1e-19


@dataclass(frozen=True)
class FeatureHeader:
    """What a feature file holds.

    Attributes:
        dim: Embedding dimension D.
        image_fingerprint: The image tower's fingerprint (weights and preprocessing).
        model: The model's name (what ``rescore`` loads by default).
        data: The raw float16 file, relative to the header's folder (a rescored manifest points at its
            source's).
        pretrained: The model's pretrained tag or weights file, if any.
        precision: The precision the image tower ran in (``fp32``, ``bf16``, ...); None in headers written
            before it was recorded.
        bound: The data file has its row keys (format 2); False for a header of format 1.

    """

    dim: int
    image_fingerprint: str
    model: str
    data: str
    pretrained: str | None = None
    precision: str | None = None
    bound: bool = True

    def to_dict(self) -> dict[str, Any]:
        """Return the header as JSON-ready data."""
        return {"format": FORMAT if self.bound else LEGACY_FORMAT, "dtype": "float16", "dim": self.dim,
                "image_fingerprint": self.image_fingerprint, "model": self.model, "pretrained": self.pretrained,
                "data": self.data, "precision": self.precision}


def row_keys(paths: Iterable[str]) -> bytes:
    """Return the key of each row's path (``KEY_BYTES`` each, concatenated): what binds a feature row to it."""
    return b"".join(hashlib.blake2b(path.encode("utf-8", "surrogatepass"), digest_size=KEY_BYTES).digest()
                    for path in paths)


def keys_path(data: Path) -> Path:
    """Return the row keys of a feature data file (``<out>.features.<id>.keys`` beside its ``.f16``)."""
    return data.with_suffix(".keys")


def header_path(manifest: str | Path) -> Path:
    """Return the path of a manifest's feature header (``<out>.features.json``)."""
    return sidecar(manifest, "features.json")


def data_path(manifest: str | Path) -> Path:
    """Return the feature rows a manifest's header points at (its own, or its source's for a rescored one)."""
    return _resolve(manifest, read_header(manifest).data)


def _resolve(manifest: str | Path, data: str) -> Path:
    """Return the header's ``data`` as a path: a relative one is relative to the header's folder."""
    path = Path(data)
    return path if path.is_absolute() else header_path(manifest).parent / path


def relative_data(manifest: str | Path, data: Path) -> str:
    """Return how ``manifest``'s header names ``data``: relative to the header's folder (movable together)."""
    return os.path.relpath(real_path(data), real_path(header_path(manifest).parent))


def read_header(manifest: str | Path) -> FeatureHeader:
    """Read and validate a manifest's feature header.

    Raises:
        InputError: no header (the scan did not store features), or a damaged one.

    """
    path = header_path(manifest)
    if not path.is_file():
        raise InputError(f"{manifest} has no stored image features ({path.name} is missing): scan with "
                         "--save-features to store them")
    try:
        data = parse_json(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path} is not readable JSON ({error})") from None
    if not isinstance(data, dict) or data.get("format") not in (FORMAT, LEGACY_FORMAT) or \
            data.get("dtype") != "float16":
        raise InputError(f"{path} is not an oodfilter feature header (expected format '{FORMAT}', float16)")
    dim, fingerprint, model, raw = data.get("dim"), data.get("image_fingerprint"), data.get("model"), data.get("data")
    if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= 1 << 16 or not all(
            isinstance(v, str) for v in (fingerprint, model, raw)):
        raise InputError(f"{path}: 'dim' must be an integer in 1..65536 and 'image_fingerprint', 'model', 'data' "
                         "strings")
    if not str(raw).endswith(".f16"):
        raise InputError(f"{path}: 'data' must name a .f16 feature file, got {excerpt(raw)}")
    pretrained, precision = data.get("pretrained"), data.get("precision")
    if pretrained is not None and not isinstance(pretrained, str):
        raise InputError(f"{path}: 'pretrained' must be a string or null")
    resolved = [name for name in PRECISIONS if name != "auto"]  # a scan records what auto resolved to
    if precision is not None and precision not in resolved:
        raise InputError(f"{path}: 'precision' must be one of {', '.join(resolved)} or null, got {excerpt(precision)}")
    return FeatureHeader(dim, str(fingerprint), str(model), str(raw), pretrained, precision,
                         bound=data["format"] == FORMAT)


def load_features(manifest: str | Path, paths: Sequence[str]) -> np.ndarray:
    """Memory-map the (N, D) float16 features of a manifest whose N ok rows have ``paths``, in order.

    Raises:
        InputError: no or a damaged header, a data file with fewer rows than the manifest's ok rows, or
            features bound to other rows than the manifest's (a manifest edited by hand, a header naming
            another scan's features); of a format-1 header, a row count other than the manifest's.

    """
    header = read_header(manifest)
    path = _resolve(manifest, header.data)
    rows = len(paths)
    if not path.is_file():
        raise InputError(f"the features of {manifest} ({path}) are gone: the scan they came from was replaced or "
                         "moved without them; scan again with --save-features")
    held = path.stat().st_size // (header.dim * DTYPE.itemsize)
    if held < rows or (held != rows and not header.bound):
        raise InputError(f"{path} holds features for {held} rows but {manifest} has {rows} ok rows: rows were "
                         "added to or removed from the manifest by hand, or the scan was interrupted; restore the "
                         "manifest, or scan again with --save-features (--resume completes an interrupted scan)")
    if header.bound:
        check_binding(manifest, path, paths)
    else:
        warnings.warn(f"the features of {manifest} were stored by an oodfilter from before features were bound to "
                      "rows: they are matched to its rows by position, and only their count could be checked; a "
                      "rescore of it stores them bound", stacklevel=2)
    if rows == 0:
        return np.zeros((0, header.dim), dtype=DTYPE)
    return np.memmap(path, dtype=DTYPE, mode="r", shape=(rows, header.dim))


def check_binding(manifest: str | Path, data: Path, paths: Sequence[str]) -> None:
    """Check that the first ``len(paths)`` feature rows of ``data`` belong to the rows with ``paths``.

    Raises:
        InputError: the keys file is missing or short, or a row's key is another path's; the message names
            the manifest, the first row that differs, the feature file and the fix.

    """
    keys = keys_path(data)
    expected = row_keys(paths)
    try:
        with open(keys, "rb") as handle:
            stored = handle.read(len(expected))
    except OSError as error:
        raise InputError(f"the row keys of the features of {manifest} ({keys}) cannot be read ({error.strerror}), so "
                         f"{data.name} cannot be matched to its rows; restore the file, or scan again with "
                         "--save-features") from None
    if stored == expected:
        return
    theirs = np.frombuffer(stored[: len(stored) - len(stored) % KEY_BYTES], dtype="<u8")
    ours = np.frombuffer(expected, dtype="<u8")[: len(theirs)]
    differ = np.flatnonzero(theirs != ours)
    first = int(differ[0]) if differ.size else len(theirs)
    raise InputError(f"the stored features {data.name} do not belong to the rows of {manifest}: its ok row "
                     f"{first + 1} ({paths[first]!r}) is not feature row {first + 1} of {data} ({header_path(manifest)}"
                     " names them). The manifest was edited by hand (a row removed, added or moved), or its header "
                     "names another scan's features; restore the manifest, or scan again with --save-features")


def matching_features(
    manifest: str | Path, image_fingerprint: str, precision: str | None = None
) -> tuple[list[str], np.ndarray] | None:
    """Return a manifest's ok-row paths and their stored (N, D) features, if it stores features of this tower.

    None when the manifest stores none, stores another image tower's or another precision's (when both
    are known), or has no ok row; the caller then encodes the images instead.

    Raises:
        InputError: a damaged header, or a data file with fewer rows than the manifest's ok rows.

    """
    if not header_path(manifest).is_file():
        return None
    header = read_header(manifest)
    if header.image_fingerprint != image_fingerprint or not same_precision(header.precision, precision):
        return None
    paths = [row.path for row in read_manifest(manifest) if row.ok]
    return (paths, load_features(manifest, paths)) if paths else None


def same_precision(stored: str | None, wanted: str | None) -> bool:
    """Whether stored features of precision ``stored`` serve a run in ``wanted`` (an unknown one serves any)."""
    return stored is None or wanted is None or stored == wanted


def _new_data_path(manifest: str | Path) -> Path:
    """Return a fresh feature file beside the manifest (never an earlier scan's: rescored manifests may name it)."""
    return sidecar(manifest, f"features.{uuid.uuid4().hex[:12]}.f16")


class FeatureWriter:
    """Appends each batch's features to ``<out>.features.<id>.f16`` before its rows reach the manifest.

    :meth:`write` (the scorer's feature sink) appends a batch's features; :meth:`bind` then appends the
    keys of the batch's ok rows, just before the rows are written: features, keys and rows reach the disk
    in that order, so after a crash each file holds at least the manifest's rows, and a resume cuts both
    back to exactly those (checking the keys it keeps).

    Args:
        manifest: The manifest the features belong to.
        dim: Embedding dimension D.
        image_fingerprint: The image tower's fingerprint.
        model: The model's name.
        keep_paths: On resume, the paths of the manifest's ok rows: the files are cut to exactly that many
            rows (a crash may have left one batch more); None starts new files.
        pretrained: The model's pretrained tag or weights file, if any.
        precision: The precision the image tower runs in (recorded in the header).

    Raises:
        InputError: resuming features of another image tower, fewer stored rows than the manifest has, or
            rows bound to other paths than the manifest's.
        OutputError: a file cannot be opened or written (names it and the fix).

    """

    def __init__(self, manifest: str | Path, dim: int, image_fingerprint: str, model: str,
                 keep_paths: Sequence[str] | None, pretrained: str | None = None, precision: str | None = None) -> None:
        self.dim = dim
        self._pending = 0  # feature rows written whose keys are not yet
        row_bytes = dim * DTYPE.itemsize
        keep = len(keep_paths) if keep_paths is not None else 0
        bound = True
        if keep_paths is not None:
            previous = read_header(manifest)
            self.path = _resolve(manifest, previous.data)
            if previous.image_fingerprint != image_fingerprint or previous.dim != dim:
                raise InputError(f"cannot resume {manifest}: its stored features come from another image tower; "
                                 "--overwrite (or another --out) to scan again")
            size = self.path.stat().st_size if self.path.is_file() else 0
            if size < keep * row_bytes:
                raise InputError(f"cannot resume {manifest}: {self.path.name} holds fewer features than the manifest "
                                 "has ok rows; --overwrite (or another --out) to scan again")
            bound = previous.bound
            if bound:
                check_binding(manifest, self.path, keep_paths)
        else:  # a new file: manifests rescored from an earlier scan have their own link to that scan's
            self.path = _new_data_path(manifest)
        self.keys = keys_path(self.path)
        self._handle = self._open(self.path, "r+b" if keep_paths is not None else "wb", keep * row_bytes)
        try:
            self._keys = self._open(self.keys, "r+b" if keep_paths is not None and bound else "wb",
                                    keep * KEY_BYTES)
        except BaseException:
            self._handle.close()
            raise
        if not bound:  # a format-1 scan resumed: its rows were matched by position; from now on they are bound
            self._append(self._keys, self.keys, row_keys(keep_paths or []))
        header = FeatureHeader(dim, image_fingerprint, model, relative_data(manifest, self.path), pretrained,
                               precision)
        atomic_write_text(header_path(manifest), json.dumps(header.to_dict(), indent=1))

    @staticmethod
    def _open(path: Path, mode: str, size: int) -> IO[bytes]:
        try:
            handle = open(path, mode)  # noqa: SIM115
            handle.truncate(size)
            handle.seek(0, os.SEEK_END)
        except OSError as error:
            raise os_error("open the feature file", path, error) from error
        return handle

    @staticmethod
    def _append(handle: IO[bytes], path: Path, data: bytes) -> None:
        try:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        except OSError as error:  # a torn last row is cut when the scan is resumed
            raise os_error("write the feature file", path, error) from error

    def write(self, features: torch.Tensor) -> None:
        """Append (n, D) features (as float16) and flush them to disk."""
        data = features.detach().half().cpu().numpy().astype(DTYPE, copy=False)
        if data.ndim != 2 or data.shape[1] != self.dim:
            raise ValueError(f"features must be (n, {self.dim}), got {tuple(data.shape)}")
        self._append(self._handle, self.path, data.tobytes())
        self._pending += data.shape[0]

    def bind(self, rows: Sequence[ManifestRow]) -> None:
        """Append the keys of ``rows``' ok rows, whose features :meth:`write` got last, and flush them to disk."""
        paths = [row.path for row in rows if row.ok]
        if len(paths) != self._pending:
            raise ValueError(f"{len(paths)} ok rows follow {self._pending} stored features: a batch's features must "
                             "be written before its rows, one per ok row")
        self._append(self._keys, self.keys, row_keys(paths))
        self._pending = 0

    def bound(self, batches: Iterable[list[ManifestRow]]) -> Iterator[list[ManifestRow]]:
        """Yield ``batches`` unchanged, each after its ok rows' keys are on disk (see :meth:`bind`)."""
        for rows in batches:
            self.bind(rows)
            yield rows

    def close(self) -> None:
        """Close the files.

        Raises:
            OutputError: the last buffered bytes could not be written.

        """
        for handle, path in ((self._handle, self.path), (self._keys, self.keys)):
            try:
                handle.close()
            except OSError as error:
                self.abort()
                raise os_error("write the feature file", path, error) from error

    def abort(self) -> None:
        """Close the files after a failure, raising nothing: what reached the disk stays, for a resume."""
        for handle in (self._handle, self._keys):
            with contextlib.suppress(OSError):  # the failure being reported already names the file
                handle.close()


def remove_features(manifest: str | Path, keep: Iterable[Path] = ()) -> None:
    """Delete a manifest's feature header and its own data and key files, unless something still uses them.

    Only files named after the manifest, beside it, are deleted, and not those in ``keep`` or named by
    another feature header in their folder or the manifest's (a format-1 header of a rescored manifest
    names its source's file; format-2 ones have a hard link of their own, which this never touches).

    Raises:
        OutputError: a file cannot be removed (names it and the fix).

    """
    path = header_path(manifest)
    if not path.is_file():
        return
    try:
        data: Path | None = _resolve(manifest, read_header(manifest).data)
    except InputError:
        data = None  # a damaged header: remove it all the same
    own = data is not None and data.name.startswith(f"{Path(manifest).name}.features.") and \
        real_path(data.parent) == real_path(path.parent)
    kept = {real_path(item) for item in keep}
    try:
        path.unlink(missing_ok=True)  # first: a kill then leaves an unused file, never a header naming none
        if data is not None and own and real_path(data) not in kept and not _named_elsewhere(data, path.parent):
            data.unlink(missing_ok=True)
            keys_path(data).unlink(missing_ok=True)
    except OSError as error:
        raise os_error("remove the stored features of", manifest, error) from error


def _named_elsewhere(data: Path, folder: Path) -> bool:
    """Whether a feature header in ``data``'s folder or ``folder`` names ``data`` (format-1 rescored manifests)."""
    target = real_path(data)
    for place in {real_path(data.parent), real_path(folder)}:
        for header in place.glob("*.features.json"):
            try:
                named = json.loads(header.read_text(encoding="utf-8")).get("data")
            except (OSError, UnicodeDecodeError, ValueError, AttributeError):
                continue
            if isinstance(named, str) and real_path(place / named) == target:  # an absolute name replaces place
                return True
    return False


def share_features(manifest: str | Path, source: Path, header: FeatureHeader, paths: Sequence[str]) -> FeatureHeader:
    """Give ``manifest`` the first ``len(paths)`` feature rows of ``source`` as its own, bound to ``paths``.

    A hard link costs nothing and keeps the rows on disk while any manifest still has them; where links do
    not work (another file system), the file is copied. Returns the header written.

    Raises:
        OutputError: the operating system refused (disk full, permission); nothing is left behind.

    """
    target = _new_data_path(manifest)
    try:
        try:
            os.link(source, target)
        except OSError:  # another file system, or one without hard links
            shutil.copyfile(source, target)
    except OSError as error:
        target.unlink(missing_ok=True)
        raise os_error("store the features as", target, error) from error
    return _finish(manifest, target, header, paths)


def write_features(manifest: str | Path, features: np.ndarray, header: FeatureHeader,
                   paths: Sequence[str]) -> FeatureHeader:
    """Write (n, D) features of the ok rows with ``paths`` as a new data file of ``manifest``; return its header.

    Raises:
        OutputError: the operating system refused (disk full, permission); nothing is left behind.

    """
    target = _new_data_path(manifest)
    data = np.ascontiguousarray(features, dtype=DTYPE)
    try:
        with open(target, "wb") as handle:
            handle.write(data.tobytes())
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        target.unlink(missing_ok=True)
        raise os_error("write the feature file", target, error) from error
    return _finish(manifest, target, header, paths)


def _finish(manifest: str | Path, target: Path, header: FeatureHeader, paths: Sequence[str]) -> FeatureHeader:
    """Write ``target``'s row keys and the header naming it (a failure removes ``target``)."""
    keys = keys_path(target)
    try:
        with open(keys, "wb") as handle:
            handle.write(row_keys(paths))
            handle.flush()
            os.fsync(handle.fileno())
        written = replace(header, data=relative_data(manifest, target), bound=True)
        atomic_write_text(header_path(manifest), json.dumps(written.to_dict(), indent=1))
    except BaseException as error:
        target.unlink(missing_ok=True)
        keys.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise os_error("write the feature file", keys, error) from error
        raise
    return written
