"""The class list of a labelled folder (ImageFolder layout): one class per sub-folder, its name cleaned for prompts.

``photos/golden_retriever/1.jpg`` is an image of the class ``golden retriever``. Names are cleaned the same way
everywhere: underscores and hyphens become spaces, runs of spaces one, ends trimmed. Two folders that clean to the
same name, ignoring case, are one class (listed once, with a warning). Folders named by WordNet ids (``n01443537``,
ImageNet's layout) are refused: a prompt "a photo of a n01443537" means nothing to the text tower, so the scan would
score against noise; the message says to rename the folders or to pass ``--classes`` with the names.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from oodfilter.data.discovery import Discovered, DiscoveredFile
from oodfilter.errors import InputError

_WORDNET_ID = re.compile(r"n\d{8}")
_SEPARATORS = re.compile(r"[\s_\-]+")


def clean_class_name(folder: str) -> str:
    """Return the class name a folder's name stands for: ``golden_retriever`` → ``golden retriever``."""
    return _SEPARATORS.sub(" ", folder).strip()


@dataclass(frozen=True)
class FolderClasses:
    """The class list of a labelled folder.

    Attributes:
        root: The scanned folder.
        class_names: The cleaned names, de-duplicated, in the sorted order of their folders.
        by_folder: Each sub-folder's name → its cleaned class name.

    """

    root: Path
    class_names: list[str]
    by_folder: dict[str, str]

    def class_of(self, item: Discovered) -> str | None:
        """Return the class an input's folder names (None for a file directly in the root, or found elsewhere)."""
        if not isinstance(item, DiscoveredFile) or item.root != self.root:
            return None
        parts = item.relative.parts
        return self.by_folder.get(parts[0]) if len(parts) > 1 else None


def folder_classes(inputs: Sequence[str]) -> FolderClasses:
    """Read the class list from the sub-folders of the one folder in ``inputs``.

    Hidden folders (``.git``, ``.cache``) are not classes.

    Raises:
        InputError: not exactly one input, an input that is not a local folder, a folder without
            sub-folders, a sub-folder whose name cleans to nothing, or sub-folders named by WordNet ids.

    """
    if len(inputs) != 1:
        raise InputError(f"--classes-from-folders reads the classes from one folder's sub-folders, and {len(inputs)} "
                         "inputs were given; scan one folder (its sub-folders are the classes)")
    root = Path(inputs[0]).expanduser()
    if not root.is_dir():
        raise InputError(f"--classes-from-folders needs a folder whose sub-folders are the classes, and {inputs[0]} "
                         "is not a folder")
    try:
        folders = sorted(entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    except OSError as error:
        raise InputError(f"cannot list the folder {root} ({error.strerror or error}); check its permissions") \
            from error
    if not folders:
        raise InputError(f"--classes-from-folders: {root} has no sub-folders, so it names no classes; arrange the "
                         "images as FOLDER/CLASS/IMAGE (ImageFolder), or pass --classes FILE")
    wordnet = [name for name in folders if _WORDNET_ID.fullmatch(name)]
    if wordnet:
        raise InputError(f"--classes-from-folders: {root}/{wordnet[0]} (and {len(wordnet) - 1} more) is named by a "
                         "WordNet id, which means nothing in a prompt; rename the folders to class names, or pass "
                         "--classes FILE with the names")
    by_folder: dict[str, str] = {}
    spelled: dict[str, str] = {}  # casefolded class name -> the first folder's spelling
    for name in folders:
        cleaned = clean_class_name(name)
        if not cleaned:
            raise InputError(f"--classes-from-folders: the folder name {name!r} in {root} is no class name once "
                             "underscores, hyphens and spaces are dropped; rename or remove it")
        by_folder[name] = spelled.setdefault(cleaned.casefold(), cleaned)
    merged = {cls: [f for f, c in by_folder.items() if c == cls] for cls in spelled.values()}
    for cls, names in merged.items():
        if len(names) > 1:  # "a_b", "a b" and "A-B" would be classes no prompt tells apart
            warnings.warn(f"--classes-from-folders: the folders {', '.join(repr(n) for n in names)} in {root} name "
                          f"one class, {cls!r}; rename them if they are different classes", stacklevel=2)
    return FolderClasses(root=root, class_names=list(dict.fromkeys(by_folder.values())), by_folder=by_folder)


def unlabelled_note(labelled: FolderClasses, files: Sequence[Discovered], by_path: dict[str, str]) -> str | None:
    """Return what the label check cannot see, said in words (None when every class and image is covered).

    Classes whose folder holds no image (they stay in the class list, so images can be scored as them) and
    images outside any class folder (directly in the root, or in a hidden folder): scored, not checked.
    """
    said = []
    empty = [cls for cls in labelled.class_names if cls not in set(by_path.values())]
    if empty:
        said.append(f"{len(empty)} class folder(s) hold no image ({', '.join(repr(c) for c in empty[:3])}"
                    f"{', ...' if len(empty) > 3 else ''}) but stay in the class list")
    outside = [item for item in files if isinstance(item, DiscoveredFile) and item.name not in by_path]
    if outside:
        said.append(f"{len(outside)} image(s) are in no class folder (e.g. {outside[0].path}: directly in "
                    f"{labelled.root} or in a hidden folder) and are scored without a label check")
    return "; ".join(said) if said else None
