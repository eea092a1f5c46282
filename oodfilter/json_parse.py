"""Parsing JSON read from files: every way a document can be malformed is one error type.

``json.loads`` raises more than :class:`json.JSONDecodeError` on hostile text: a bare ``ValueError`` for an
integer of more digits than Python converts (4300 by default), and ``RecursionError`` for arrays or objects
nested deeper than the interpreter's stack allows. :func:`parse_json` turns both into a
:class:`json.JSONDecodeError`, so every reader's one ``except json.JSONDecodeError`` (which names its file)
covers them. Values are otherwise what ``json.loads`` gives: a number too large for a float is an
infinity, which the readers' finite checks (:mod:`oodfilter.finite`) refuse.
"""

from __future__ import annotations

import json
import sys
from typing import Any


class JSONLimitError(json.JSONDecodeError):
    """A JSON document that is well formed but beyond what can be read (an integer too long, too deep)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "", 0)
        self.args = (message,)  # no "line 1 column 1": the position is not known

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self) -> tuple[type[JSONLimitError], tuple[str]]:  # picklable across worker processes
        return self.__class__, (str(self.args[0]),)


def parse_json(data: str | bytes | bytearray, **options: Any) -> Any:
    """Return ``json.loads(data, **options)``, raising :class:`json.JSONDecodeError` for every malformed document.

    A ``ValueError`` that an option's hook raises (e.g. ``parse_constant`` refusing ``NaN``) becomes one too.

    Raises:
        json.JSONDecodeError: not JSON; or (as :class:`JSONLimitError`) an integer longer than Python converts,
            or nesting deeper than the interpreter's stack.
        UnicodeDecodeError: ``data`` is bytes that are not UTF-8, UTF-16 or UTF-32.

    """
    try:
        return json.loads(data, **options)
    except (json.JSONDecodeError, UnicodeDecodeError):  # both ValueErrors, already saying what is wrong
        raise
    except RecursionError:
        raise JSONLimitError("nested too deeply (arrays or objects inside one another)") from None
    except ValueError as error:  # int() of a digit string longer than Python converts
        if "integer string conversion" not in str(error):
            raise JSONLimitError(str(error)) from error
        limit = getattr(sys, "get_int_max_str_digits", lambda: 4300)()
        raise JSONLimitError(f"integer too long (more than {limit} digits): not a finite number") from error
