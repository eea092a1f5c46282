"""What caption encoding reports while it runs: a count after every batch, and one line with its estimate.

Image files encoded for an evaluation or a plugin's fit (:func:`~oodfilter.data.loader.encode_image_files`)
report their count to the same hooks (``images``), so one display shows both.

The library itself only logs (the estimate at INFO); a caller that wants a display passes hooks to
:func:`~oodfilter.text.class_vectors.build_class_vectors` or :func:`~oodfilter.text.encoding.encode_captions`
(``progress=``), or installs them for a block of work with :func:`reporting_encodes`, which reaches the
encodes deep inside a scan, an evaluation or a plugin's scorer. The command line installs a bar this way
(this module imports nothing heavy, so the command line can install it before it knows whether work runs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

# ``advance(done, total)``: captions encoded so far of those this encode has to do.
Advance = Callable[[int, int], None]


@dataclass(frozen=True)
class EncodeHooks:
    """Callbacks of a caption encode.

    Attributes:
        advance: Called as ``advance(done, total)`` before the first batch (``done`` = 0) and after each
            batch, with ``done`` increasing up to ``total``, the captions to encode (all towers together).
        announce: Called once, after the first batch has been timed, with a line saying how many
            captions will be encoded with which towers and about how long that takes.
        images: Called as ``images(done, total)`` before the first batch and after each batch of image
            files encoded by :func:`~oodfilter.data.loader.encode_image_files` (``done`` counts the
            unreadable files too); each call of it counts from 0 again.

    """

    advance: Advance | None = None
    announce: Callable[[str], None] | None = None
    images: Advance | None = None


# What ``progress=`` takes: hooks, or just an ``advance(done, total)`` callback.
EncodeProgress = EncodeHooks | Advance

_installed: ContextVar[EncodeHooks | None] = ContextVar("oodfilter_encode_hooks", default=None)


@contextmanager
def reporting_encodes(progress: EncodeProgress) -> Iterator[None]:
    """Report every caption encode inside the block (that is not given its own ``progress=``) to ``progress``."""
    token = _installed.set(as_hooks(progress))
    try:
        yield
    finally:
        _installed.reset(token)


def as_hooks(progress: EncodeProgress | None) -> EncodeHooks:
    """Return ``progress`` as hooks; for None the hooks installed by :func:`reporting_encodes`, else none."""
    if progress is None:
        return _installed.get() or EncodeHooks()
    return progress if isinstance(progress, EncodeHooks) else EncodeHooks(advance=progress)
