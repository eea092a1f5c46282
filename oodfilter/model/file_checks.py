"""Checks of the files model commands read and write, before anything heavy is imported or loaded.

``oodfilter convert-clipn`` refuses a missing checkpoint or a destination it would clobber in a moment,
without importing torch; :func:`~oodfilter.model.bundle.save_bundle` and
:func:`~oodfilter.model.convert.convert_reference_checkpoint` run the same checks.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from oodfilter.errors import CheckpointError, InputError
from oodfilter.model.manifest import BUNDLE_FILES, BUNDLE_MANIFEST, YES_DIR, listed_files

# What a folder that holds a bundle and nothing else contains; only such a folder is ever replaced.
_BUNDLE_ENTRIES = frozenset((BUNDLE_MANIFEST, YES_DIR, *BUNDLE_FILES))
_SHOW = 3


def check_checkpoint_file(path: str | Path) -> Path:
    """Return ``path`` if it is a file.

    Raises:
        CheckpointError: it does not exist (or is not a file).

    """
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"checkpoint {file} does not exist")
    return file


def check_bundle_destination(out: Path, *, overwrite: bool) -> None:
    """Refuse a destination whose content a new bundle would destroy.

    ``out`` may be missing or an empty folder; with ``overwrite`` it may also be a folder holding a
    bundle (recognised by its ``oodfilter.json``) and nothing else.

    Raises:
        InputError: ``out`` is a link or a file, a non-empty folder that is not a bundle, a bundle
            folder that holds other files too, or a bundle while ``overwrite`` is False.

    """
    if out.is_symlink():
        raise InputError(f"{out} is a symbolic link; give the bundle a real folder path (links are never replaced)")
    if not out.exists():
        return
    if not out.is_dir():
        raise InputError(f"{out} is a file, not a bundle folder; choose another path (a file is never replaced)")
    if not any(out.iterdir()):
        return
    if not (out / BUNDLE_MANIFEST).is_file():
        raise InputError(
            f"{out} is not empty and is not an oodfilter bundle (it has no {BUNDLE_MANIFEST}); choose a new "
            "folder. Overwriting replaces only a bundle folder, never other files."
        )
    if not overwrite:
        raise InputError(
            f"{out} already holds a bundle and is not empty; choose a new folder or pass overwrite=True "
            "(CLI: --overwrite) to replace it"
        )
    foreign = _foreign_entries(out)
    if foreign:
        raise InputError(
            f"{out} holds files that are not part of a bundle ({', '.join(foreign)}); overwriting replaces only "
            "a folder that holds a bundle and nothing else. Choose a new folder or move those files away."
        )


def _foreign_entries(folder: Path) -> list[str]:
    """Up to a few paths inside ``folder`` that are not bundle files (sorted, relative)."""
    known = _BUNDLE_ENTRIES | listed_files(folder)
    entries = (path.relative_to(folder).as_posix() for path in folder.rglob("*"))
    return sorted(itertools.islice((name for name in entries if name not in known), _SHOW))
