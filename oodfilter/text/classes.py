"""Reading and cleaning lists of in-distribution class names."""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from oodfilter.errors import ClassListError
from oodfilter.messages import excerpt


class ClassList(list[str]):
    """A class list that is already cleaned (so it is not cleaned, or warned about, twice)."""


def clean_class_names(names: Iterable[str], *, source: str = "the class list") -> ClassList:
    """Strip blanks, drop empty lines and ``#`` comments, and warn about duplicate names.

    Duplicates are kept (class indices stay aligned with the user's list; ImageNet itself names two
    classes "crane"), but a warning names them.

    Raises:
        ClassListError: no class name is left.

    """
    if isinstance(names, ClassList):
        return names
    cleaned = ClassList()
    for raw in names:
        if not isinstance(raw, str):
            raise ClassListError(f"{source} holds a {type(raw).__name__} ({excerpt(raw)}); class names must be strings")
        name = raw.strip()
        if name and not name.startswith("#"):
            cleaned.append(name)
    if not cleaned:
        raise ClassListError(f"{source} has no class names; list one in-distribution class per line")
    duplicates = sorted(name for name, count in Counter(cleaned).items() if count > 1)
    if duplicates:
        warnings.warn(
            f"{source} repeats {len(duplicates)} class name(s): {', '.join(duplicates[:10])}; "
            "repeated names get identical text vectors",
            stacklevel=2,
        )
    return cleaned


def read_class_names(path: str | Path) -> ClassList:
    """Read a class list: one name per line (UTF-8), blank lines and ``#`` comment lines ignored.

    Raises:
        ClassListError: the file is missing, unreadable, not UTF-8 text, or lists no class.

    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except FileNotFoundError as error:
        raise ClassListError(f"class list {file} does not exist; pass a text file with one class per line") from error
    except IsADirectoryError as error:
        raise ClassListError(f"class list {file} is a folder; pass a text file with one class per line") from error
    except UnicodeDecodeError as error:
        raise ClassListError(f"class list {file} is not UTF-8 text; save it as UTF-8") from error
    except OSError as error:
        raise ClassListError(f"class list {file} cannot be read: {error.strerror}") from error
    return clean_class_names(text.splitlines(), source=f"class list {file}")
