"""What a run of file actions (or of their undo) did."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ActionReport:
    """Counts per outcome and one message per file left alone.

    Attributes:
        done: Files acted on (or, for undo, restored or removed).
        already_done: Files found already in the wanted state (a resumed run, a repeated undo).
        skipped: For each file left alone, its path and why (for undo: the refused entries).
    """

    done: int = 0
    already_done: int = 0
    skipped: list[str] = field(default_factory=list)
