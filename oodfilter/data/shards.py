"""WebDataset shards: uncompressed tar files whose members group into samples by key.

A member ``dir/000123.jpg`` belongs to sample ``dir/000123`` (the key is the member name up to the first
dot of its file name, as WebDataset splits it) and holds its ``jpg`` field. A sample with an image field is
one input, named ``<shard>#<key>`` everywhere (manifest rows, resume, training data), so every engine and
worker reads it on its own: the shard's member index is read once per process (a pass over the tar
headers) and each image is then one seek and read, also for a shard behind a URL.

The standard library's tarfile reads them: WebDataset's own reader streams samples in order, while a scan,
a resumed scan and a shuffled training epoch need each sample by its name.
"""

from __future__ import annotations

import functools
import glob
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from braceexpand import braceexpand

from oodfilter.data.range_file import open_ranges
from oodfilter.data.remote import RemoteReadError, check_url, filesystem, is_outage, is_url, unavailable
from oodfilter.data.remote_limits import Deadline, RemoteDeadlineError, max_remote_bytes, within
from oodfilter.errors import InputError
from oodfilter.json_parse import parse_json
from oodfilter.messages import redact

SAMPLE_SEPARATOR = "#"
SHARD_SUFFIX = ".tar"
IMAGE_FIELDS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "ppm", "pgm", "pbm", "jfif")
CAPTION_FIELDS = ("txt", "text", "caption")
_INDEXED_SHARDS = 16  # per process; a scan reads its shards in order
_TAIL_CHECKED = 64 * 1024  # bytes after the last member that must be zeros (tar's end blocks)


@dataclass(frozen=True)
class ShardMember:
    """Where one member's bytes lie in its shard."""

    name: str
    offset: int
    size: int


@dataclass(frozen=True)
class ShardIndex:
    """A shard's samples: key → field → member, in the shard's order, and why reading stopped (if it did)."""

    samples: dict[str, dict[str, ShardMember]]
    error: str | None = None


def is_shard(name: str) -> bool:
    """Return whether ``name`` names a shard (a ``.tar`` file or URL)."""
    return name.lower().endswith(SHARD_SUFFIX)


def sample_name(shard: str, key: str) -> str:
    """Return the input name of sample ``key`` of ``shard``: ``<shard>#<key>``."""
    return f"{shard}{SAMPLE_SEPARATOR}{key}"


def split_sample_name(name: str) -> tuple[str, str] | None:
    """Return (shard, key) when ``name`` names a shard's sample, else None.

    The shard ends at the first ``.tar#``, so a key may hold ``#`` (or be empty, for a member ``.jpg``).
    """
    at = name.lower().find(SHARD_SUFFIX + SAMPLE_SEPARATOR)
    if at <= 0:
        return None
    end = at + len(SHARD_SUFFIX)
    return name[:end], name[end + len(SAMPLE_SEPARATOR):]


def split_member_name(member: str) -> tuple[str, str]:
    """Return (key, field) of a tar member, e.g. ``a/b/0001.seg.png`` → (``a/b/0001``, ``seg.png``)."""
    folder, _, file = member.rpartition("/")
    stem, _, field = file.partition(".")
    return (f"{folder}/{stem}" if folder else stem), field.lower()


def image_field(fields: dict[str, ShardMember]) -> str | None:
    """Return the field that holds a sample's image (the first of :data:`IMAGE_FIELDS` it has), or None."""
    for field in IMAGE_FIELDS:
        if field in fields:
            return field
    return next((field for field in fields if field.rpartition(".")[2] in IMAGE_FIELDS), None)


def shard_index(shard: str) -> ShardIndex:
    """Return the index of ``shard`` (cached per process).

    A shard that ends early or is corrupt keeps the samples read before the damage, and says why in
    :attr:`ShardIndex.error`.

    Raises:
        InputError: the shard does not exist or is not a tar file at all.

    """
    return _cached_index(shard, _stamp(shard))


def _stamp(shard: str) -> tuple[int, int] | None:
    """Return a local shard's (mtime, size), so a shard rewritten in place is indexed again (None for URLs)."""
    if is_url(shard):
        return None
    try:
        status = os.stat(shard)
    except OSError:
        return None
    return status.st_mtime_ns, status.st_size


@functools.lru_cache(maxsize=_INDEXED_SHARDS)
def _cached_index(shard: str, stamp: tuple[int, int] | None) -> ShardIndex:
    try:
        return _read_index(shard)
    except InputError:
        raise
    except Exception as failure:  # a remote shard's server failing mid-read: stop, --resume continues
        if is_url(shard):
            raise _remote_failure(shard, failure) from failure
        raise InputError(f"shard {redact(shard)} cannot be read ({type(failure).__name__}: {failure})") from failure


def _read_index(shard: str) -> ShardIndex:
    samples: dict[str, dict[str, ShardMember]] = {}
    error = None
    with open_shard(shard, deadline=Deadline()) as handle:  # one deadline for the whole index
        try:
            archive = tarfile.open(fileobj=handle, mode="r:")  # noqa: SIM115 (members are read as they are listed)
        except tarfile.ReadError as failure:
            raise InputError(f"shard {redact(shard)} is not an uncompressed tar file ({failure}); WebDataset shards "
                             "are .tar files") from failure
        try:
            for member in _members(archive):
                if member.isfile():
                    key, field = split_member_name(member.name)
                    samples.setdefault(key, {})[field] = ShardMember(member.name, member.offset_data, member.size)
            if _damaged_after(handle, archive.offset):  # tarfile stops quietly at a bad header past the first
                error = (f"shard is damaged after {len(samples)} samples (an unreadable header at byte "
                         f"{archive.offset}); the rest cannot be read")
        except (tarfile.TarError, EOFError) as failure:
            error = f"shard is damaged after {len(samples)} samples ({failure}); the rest cannot be read"
        except OSError as failure:
            if is_url(shard):
                raise
            error = f"shard is damaged after {len(samples)} samples ({failure}); the rest cannot be read"
    return ShardIndex(samples, error)


def _damaged_after(handle: IO[bytes], end: int) -> bool:
    """Return whether anything but end-of-archive zero blocks follows the last member read (at ``end``)."""
    handle.seek(end)
    rest = handle.read(_TAIL_CHECKED)
    return any(rest) or (len(rest) == _TAIL_CHECKED and any(handle.read(_TAIL_CHECKED)))


def _remote_failure(shard: str, failure: BaseException) -> InputError:
    """Return the error for a remote shard that could not be read: an outage, or a server shards cannot use."""
    if isinstance(failure, ValueError) and "range" in str(failure).lower():
        return InputError(f"shard {redact(shard)}: its server does not answer byte-range requests, which reading a "
                          "shard's samples needs; copy the shards to local disk or an object store")
    if isinstance(failure, OSError) and not is_outage(failure):
        return InputError(f"shard {redact(shard)} cannot be read ({redact(str(failure))})")
    return unavailable(shard, failure)


def _members(archive: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while True:
        member = archive.next()
        if member is None:
            return
        yield member


def open_shard(shard: str, *, deadline: Deadline | None = None) -> IO[bytes]:
    """Open a local or remote shard for reading (binary, seekable).

    A remote shard is read by byte-range requests within ``deadline`` (None: each request within its own),
    none larger than the size cap (:mod:`oodfilter.data.range_file`).

    Raises:
        InputError: it does not exist or cannot be read; SourceUnavailableError for a remote outage or a
            deadline passed.

    """
    if is_url(shard):
        fs, path = filesystem(shard)
        try:
            return open_ranges(fs, path, shard, deadline)
        except RemoteDeadlineError as error:
            raise unavailable(shard, error) from error
        except FileNotFoundError as error:
            if is_outage(error):
                raise unavailable(shard, error) from error
            raise InputError(f"shard {redact(shard)} does not exist") from error
    try:
        return open(Path(shard), "rb")
    except FileNotFoundError as error:
        raise InputError(f"shard {redact(shard)} does not exist") from error
    except (IsADirectoryError, PermissionError) as error:
        raise InputError(f"shard {redact(shard)} cannot be read ({error.strerror})") from error


def read_member(shard: str, member: ShardMember, *, max_bytes: int | None = None) -> bytes:
    """Return the bytes of one member of ``shard`` (a remote one within a deadline).

    Raises:
        RemoteReadError: the member is larger than ``max_bytes`` (default: the remote size cap) or ends early
            (the shard changed).

    """
    where = sample_name(shard, member.name)
    limit = max_remote_bytes() if max_bytes is None else max_bytes
    if member.size > limit:
        raise RemoteReadError(where, f"larger than the limit of {limit} bytes; not read")
    if is_url(shard):  # one ranged request for exactly the member's bytes (no read-ahead block)
        fs, path = filesystem(shard, max_bytes=limit)
        try:
            data = within(fs, "cat_file", path, start=member.offset, end=member.offset + member.size,
                          deadline=Deadline())
        except Exception as failure:
            raise _remote_failure(shard, failure) from failure
        if len(data) > member.size:  # the server sent the whole shard: it ignores byte ranges
            raise _remote_failure(shard, ValueError("range requests are not honoured"))
    else:
        with open_shard(shard) as handle:
            handle.seek(member.offset)
            data = handle.read(member.size)
    if len(data) != member.size:
        raise RemoteReadError(where, "the shard ends inside this member (was it changed during the run?)")
    return bytes(data)


def read_sample_image(name: str, *, max_bytes: int | None = None) -> bytes:
    """Return the image bytes of sample ``<shard>#<key>``.

    Raises:
        RemoteReadError: the shard has no such sample, or the sample has no image field.

    """
    parts = split_sample_name(name)
    if parts is None:
        raise ValueError(f"{name} does not name a shard sample")
    shard, key = parts
    index = shard_index(shard)
    fields = index.samples.get(key)
    if fields is None:
        raise RemoteReadError(name, "no such sample in the shard" + (f" ({index.error})" if index.error else ""))
    field = image_field(fields)
    if field is None:
        raise RemoteReadError(name, f"the sample has no image field (it has {', '.join(sorted(fields))})")
    return read_member(shard, fields[field], max_bytes=max_bytes)


def sample_caption(shard: str, fields: dict[str, ShardMember]) -> str | None:
    """Return a sample's caption: its ``txt`` field, or the ``caption``/``text`` entry of its ``json`` field."""
    for field in CAPTION_FIELDS:
        if field in fields:
            return read_member(shard, fields[field]).decode("utf-8", errors="replace").strip() or None
    if "json" in fields:
        try:
            data: Any = parse_json(read_member(shard, fields["json"]))
        except (ValueError, UnicodeDecodeError):
            return None
        for entry in ("caption", "text", "txt"):
            if isinstance(data, dict) and isinstance(data.get(entry), str) and data[entry].strip():
                return str(data[entry]).strip()
    return None


def expand_shards(spec: str) -> list[str]:
    """Return the shards ``spec`` names: ``{000..099}`` ranges, then local or URL globs, sorted, no repeats.

    Raises:
        InputError: a name that is not a ``.tar`` shard, or a pattern that matches no shard.

    """
    found: dict[str, None] = {}
    for text in braceexpand(spec):
        if is_url(text):
            check_url(text)
        if not is_shard(text):
            raise InputError(f"{redact(text)} is not a WebDataset shard; shards are .tar files")
        if not set("*?[") & set(text):
            found.setdefault(text, None)
            continue
        if is_url(text):
            fs, path = filesystem(text)
            try:
                matches = [fs.unstrip_protocol(match) for match in within(fs, "glob", path, deadline=Deadline())]
            except RemoteDeadlineError as error:
                raise InputError(f"cannot list {redact(text)}: {error}") from error
        else:
            matches = glob.glob(text, recursive=True)
        if not matches:
            raise InputError(f"the pattern '{redact(text)}' matches no shard; check the pattern and quote it")
        for match in sorted(matches):
            found.setdefault(match, None)
    return list(found)


def names_shards(spec: str) -> bool:
    """Return whether ``spec`` (a ``--data`` value) names WebDataset shards rather than a table or folder."""
    return any(is_shard(text) for text in braceexpand(spec))


def image_sample_keys(shard: str) -> tuple[list[str], str | None]:
    """Return the keys of ``shard``'s samples that have an image (shard order), and why reading stopped."""
    index = shard_index(shard)
    return [key for key, fields in index.samples.items() if image_field(fields) is not None], index.error
