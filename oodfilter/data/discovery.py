"""Finding images: files, folders (recursive) and globs, URLs and WebDataset shards, in a stable order.

Local folders are walked symlink-loop safe. ``{000..099}`` ranges expand as WebDataset writes them (the
shell only expands them unquoted). A URL (``s3://bucket/photos/``, ``https://host/a.jpg``, with globs) is
listed through fsspec (:mod:`oodfilter.data.remote`); a ``.tar`` file or URL named as an input, directly or
by a glob, is a WebDataset shard and gives one input per sample with an image (:mod:`oodfilter.data.shards`).
"""

from __future__ import annotations

import fnmatch
import glob
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from braceexpand import braceexpand

from oodfilter.data.remote import check_url, filesystem, is_url
from oodfilter.data.remote_limits import Deadline, RemoteDeadlineError, within
from oodfilter.data.shards import image_sample_keys, is_shard, sample_name
from oodfilter.errors import InputError
from oodfilter.messages import redact

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".jfif"}
)
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class DiscoveredFile:
    """An input file and the root it was found under (for relative destination paths).

    Attributes:
        path: The file as found (not resolved: a symlink stays the link the user sees).
        root: The folder the user named, or the file's parent for a file or glob match.
        error: Why this input cannot be read at all (a folder that could not be listed); it becomes an
            error row instead of being skipped silently.

    """

    path: Path
    root: Path
    error: str | None = None

    @property
    def relative(self) -> Path:
        """The path relative to its root."""
        return self.path.relative_to(self.root)

    @property
    def name(self) -> str:
        """The input's name in manifests: the path as found."""
        return str(self.path)

    @property
    def local(self) -> bool:
        """Always true: a file on this machine (file actions may move it)."""
        return True


@dataclass(frozen=True)
class DiscoveredItem:
    """An input that is not a local file of its own: a URL, or a sample of a (local or remote) shard.

    Attributes:
        name: The URL, or ``<shard>#<key>`` for a shard's sample: the input's name in manifests.
        root: The input the user named (folder URL or shard) that it was found under.
        error: Why it cannot be read at all (a damaged shard); it becomes an error row.

    """

    name: str
    root: str
    error: str | None = None

    @property
    def relative(self) -> PurePosixPath:
        """The name relative to its root (what --include and --exclude match)."""
        prefix = self.root.rstrip("/") + "/"
        return PurePosixPath(self.name[len(prefix):] if self.name.startswith(prefix) else self.name.rsplit("/", 1)[-1])

    @property
    def local(self) -> bool:
        """Always false: file actions cannot move it."""
        return False


Discovered = DiscoveredFile | DiscoveredItem


def discover_images(
    inputs: Sequence[str | Path],
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    recursive: bool = True,
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
) -> list[Discovered]:
    """Expand files, folders, glob patterns, URLs and shards into images, sorted by name and without repeats.

    Files named explicitly are kept whatever their extension (the user asked for them; a bad one
    becomes an error row). Files found in folders or by globs must have an image extension (any case).
    Symbolic links are followed; a link that leads back into a folder already being walked is skipped,
    and a broken link with an image extension is kept so that it is reported.

    Args:
        inputs: Files, folders and glob patterns (``**`` recurses), URLs, shards, ``{a..b}`` ranges.
        include: If given, keep only paths (relative to their root) matching one of these patterns.
        exclude: Drop paths (relative to their root) matching any of these patterns.
        recursive: Walk sub-folders of named folders.
        extensions: Lower-case image extensions with the dot.

    Raises:
        InputError: no inputs, an input that is neither an existing path nor a glob with matches, a URL that
            carries a password or names nothing.

    """
    if not inputs:
        raise InputError("no inputs given; pass image files, folders or glob patterns")
    wanted = {e.lower() for e in extensions}
    found: dict[str, Discovered] = {}
    for raw in inputs:
        given = str(raw)  # a {a..b} range expands, unless a file has that very name
        for text in [given] if os.path.lexists(given) or "{" not in given else braceexpand(given):
            items = _expand_url(text, wanted, recursive) if is_url(text) else _expand(text, wanted, recursive)
            for item in items:
                found.setdefault(item.name, item)
    selected = [item for item in found.values() if _selected(PurePosixPath(item.relative), include, exclude)]
    return sorted(selected, key=lambda item: item.name)


def _expand_url(url: str, wanted: set[str], recursive: bool) -> Iterator[Discovered]:
    """Yield what a URL names: an object, a shard's samples, or the images (and shards) under a prefix or glob.

    The listing keeps one deadline and the size cap (:mod:`oodfilter.data.remote_limits`); each shard's
    index then has its own.
    """
    check_url(url)
    fs, path = filesystem(url)
    deadline = Deadline()
    try:
        listed_by_glob = bool(_url_glob_chars(url) & set(path))
        if listed_by_glob:
            matches, root = sorted(within(fs, "glob", path, deadline=deadline)), _url_glob_root(url)
            if not matches:
                raise InputError(f"the pattern '{redact(url)}' matches nothing; check the pattern and quote it")
        elif within(fs, "isdir", path, deadline=deadline):
            found = within(fs, "find", path, deadline=deadline) if recursive else \
                within(fs, "ls", path, detail=False, deadline=deadline)
            matches, root = sorted(found), url
        elif within(fs, "exists", path, deadline=deadline):
            yield from _shard_samples(url, url) if is_shard(url) else [DiscoveredItem(url, url.rsplit("/", 1)[0])]
            return
        else:
            raise InputError(f"input '{redact(url)}' does not exist; check the URL (and that its credentials are "
                             "set)")
    except InputError:
        raise
    except RemoteDeadlineError as error:
        raise InputError(f"cannot list {redact(url)}: {error}") from error
    except Exception as error:  # a refused listing, missing credentials, a server that is down: each backend's own
        raise InputError(f"cannot list {redact(url)}: {type(error).__name__}: {redact(str(error))}; check the URL, "
                         "that the server is reachable and that its credentials are set in the environment") from error
    shards = 0
    for match in matches:
        name = fs.unstrip_protocol(match)
        suffix = PurePosixPath(urlsplit(name).path).suffix.lower()
        if is_shard(urlsplit(name).path) and listed_by_glob:
            yield from _shard_samples(name, root)
        elif is_shard(urlsplit(name).path):
            shards += 1
        elif suffix in wanted:
            yield DiscoveredItem(name, root)
    _hint_shards(url, shards)


def _url_glob_chars(url: str) -> set[str]:
    """Glob characters of a URL: ``?`` starts an HTTP query (a presigned URL's signature), not a pattern."""
    return _GLOB_CHARS - {"?"} if url.lower().startswith(("http://", "https://")) else _GLOB_CHARS


def _hint_shards(folder: str, shards: int) -> None:
    """Say how to scan the shards a folder holds (a folder's listing takes images only, not shards' samples)."""
    if shards:
        shown = redact(folder)
        warnings.warn(f"{shown} holds {shards} .tar file(s), which a folder scan leaves out; to scan WebDataset "
                      f"shards' samples, name them: '{shown.rstrip('/')}/*.tar'", stacklevel=4)


def _shard_samples(shard: str, root: str) -> Iterator[DiscoveredItem]:
    """Yield one item per image sample of ``shard``, and an error item when it is damaged or not a tar."""
    try:
        keys, damage = image_sample_keys(shard)
    except InputError as error:
        yield DiscoveredItem(shard, root, f"shard cannot be read: {error}")
        return
    for key in keys:
        yield DiscoveredItem(sample_name(shard, key), root)
    if damage is not None:
        yield DiscoveredItem(shard, root, damage)


def _expand(text: str, wanted: set[str], recursive: bool) -> Iterator[Discovered]:
    """Yield what a local input names: a folder's images, a file, a shard's samples, or a glob's matches."""
    path = Path(text).expanduser()
    if is_shard(text) and path.is_file():
        yield from _shard_samples(str(path), str(path))
        return
    if path.is_dir():
        shards = 0
        for file, error in _walk(path, recursive):
            if error is not None or file.suffix.lower() in wanted:
                yield DiscoveredFile(file, path, error)
            elif is_shard(file.name):
                shards += 1
        _hint_shards(str(path), shards)
    elif path.exists() or path.is_symlink():  # files, broken links and FIFOs alike: each gets its row
        yield DiscoveredFile(path, path.parent)
    elif _GLOB_CHARS & set(text):
        matches = [Path(m) for m in glob.glob(text, recursive=True)]
        if not matches:
            raise InputError(f"the pattern '{text}' matches nothing; check the pattern and quote it")
        root = _glob_root(text)
        for file in matches:
            if is_shard(file.name) and file.is_file():
                yield from _shard_samples(str(file), str(root))
            elif (file.is_symlink() or not file.is_dir()) and file.suffix.lower() in wanted:
                yield DiscoveredFile(file, root if file.is_relative_to(root) else file.parent)
    else:
        raise InputError(f"input '{text}' does not exist; pass image files, folders or glob patterns")


def _walk(folder: Path, recursive: bool) -> Iterator[tuple[Path, str | None]]:
    """Yield (file, None) under ``folder``, and (folder, reason) for each folder that cannot be listed.

    Symlinked folders are followed once each (no loops).
    """
    seen: set[str] = set()
    failed: list[OSError] = []
    for current, dirs, files in os.walk(folder, followlinks=True, onerror=failed.append):
        yield from _unlisted(failed)
        real = os.path.realpath(current)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if recursive and os.path.realpath(os.path.join(current, d)) not in seen)
        for name in sorted(files):
            yield Path(current) / name, None
        if not recursive:
            break
    yield from _unlisted(failed)


def _unlisted(failed: list[OSError]) -> Iterator[tuple[Path, str]]:
    """Drain the listing errors collected so far as (folder, reason) pairs."""
    while failed:
        error = failed.pop(0)
        reason = "permission denied" if isinstance(error, PermissionError) else (error.strerror or str(error))
        yield Path(str(error.filename)), f"folder cannot be read ({reason}); its images were not scanned"


def _glob_root(pattern: str) -> Path:
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if _GLOB_CHARS & set(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _url_glob_root(url: str) -> str:
    """Return the fixed folder part of a URL glob (``s3://b/x/*/y*.jpg`` → ``s3://b/x``)."""
    first = min(url.index(char) for char in _url_glob_chars(url) if char in url)
    return url[:first].rsplit("/", 1)[0]


def _selected(relative: PurePosixPath, include: Sequence[str], exclude: Sequence[str]) -> bool:
    text = relative.as_posix()
    if include and not any(fnmatch.fnmatch(text, p) or fnmatch.fnmatch(relative.name, p) for p in include):
        return False
    return not any(fnmatch.fnmatch(text, p) or fnmatch.fnmatch(relative.name, p) for p in exclude)
