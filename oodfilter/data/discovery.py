"""Finding image files: files, folders (recursive) and globs, in a stable order, symlink-loop safe."""

from __future__ import annotations

import fnmatch
import glob
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from oodfilter.errors import InputError

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


def discover_images(
    inputs: Sequence[str | Path],
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    recursive: bool = True,
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
) -> list[DiscoveredFile]:
    """Expand files, folders and glob patterns into image files, sorted and without repeats.

    Files named explicitly are kept whatever their extension (the user asked for them; a bad one
    becomes an error row). Files found in folders or by globs must have an image extension (any case).
    Symbolic links are followed; a link that leads back into a folder already being walked is skipped,
    and a broken link with an image extension is kept so that it is reported.

    Args:
        inputs: Files, folders and glob patterns (``**`` recurses).
        include: If given, keep only paths (relative to their root) matching one of these patterns.
        exclude: Drop paths (relative to their root) matching any of these patterns.
        recursive: Walk sub-folders of named folders.
        extensions: Lower-case image extensions with the dot.

    Raises:
        InputError: no inputs, or an input that is neither an existing path nor a glob with matches.

    """
    if not inputs:
        raise InputError("no inputs given; pass image files, folders or glob patterns")
    wanted = {e.lower() for e in extensions}
    found: dict[Path, DiscoveredFile] = {}
    for raw in inputs:
        for item in _expand(str(raw), wanted, recursive):
            found.setdefault(item.path, item)
    selected = [item for item in found.values() if _selected(item.relative, include, exclude)]
    return sorted(selected, key=lambda item: str(item.path))


def _expand(text: str, wanted: set[str], recursive: bool) -> Iterator[DiscoveredFile]:
    """Yield what one input names: a folder's images (and unlistable folders), a file, or a glob's images."""
    path = Path(text).expanduser()
    if path.is_dir():
        for file, error in _walk(path, recursive):
            if error is not None or file.suffix.lower() in wanted:
                yield DiscoveredFile(file, path, error)
    elif path.exists() or path.is_symlink():  # files, broken links and FIFOs alike: each gets its row
        yield DiscoveredFile(path, path.parent)
    elif _GLOB_CHARS & set(text):
        matches = [Path(m) for m in glob.glob(text, recursive=True)]
        if not matches:
            raise InputError(f"the pattern '{text}' matches nothing; check the pattern and quote it")
        root = _glob_root(text)
        for file in matches:
            if (file.is_symlink() or not file.is_dir()) and file.suffix.lower() in wanted:
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


def _selected(relative: Path, include: Sequence[str], exclude: Sequence[str]) -> bool:
    text = relative.as_posix()
    if include and not any(fnmatch.fnmatch(text, p) or fnmatch.fnmatch(relative.name, p) for p in include):
        return False
    return not any(fnmatch.fnmatch(text, p) or fnmatch.fnmatch(relative.name, p) for p in exclude)
