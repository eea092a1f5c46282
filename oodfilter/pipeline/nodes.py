"""A ``torchdata.nodes`` node that scores batches and tags them or drops their OOD samples.

Needs the optional ``torchdata`` extra. The node's state holds its source's state and its counters
(seen, kept, dropped), so a ``torchdata.nodes.Loader`` checkpoint resumes exactly.
"""

from __future__ import annotations

from typing import Any

from oodfilter.errors import MissingDependencyError
from oodfilter.pipeline.filter import FilterCounters, OODFilter

try:
    from torchdata.nodes import BaseNode
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(
        "oodfilter.pipeline.nodes needs torchdata: pip install 'oodfilter[torchdata]'"
    ) from error


class OODFilterNode(BaseNode[Any]):
    """Filter or tag the collated batches coming from ``source`` (a node that yields batches).

    Args:
        source: A node yielding collated batches that carry a CLIP view (see :class:`OODFilter`).
        ood_filter: The filter (its mode decides tag or drop); in drop mode, batches left empty are skipped.

    """

    SOURCE_KEY = "source"
    COUNTERS_KEY = "counters"

    def __init__(self, source: BaseNode[Any], ood_filter: OODFilter) -> None:
        super().__init__()
        self.source = source
        self.filter = ood_filter

    def reset(self, initial_state: dict[str, Any] | None = None) -> None:
        """Start from the beginning, or from ``initial_state`` (source position and counters)."""
        super().reset(initial_state)
        if initial_state is not None:
            self.source.reset(initial_state[self.SOURCE_KEY])
            self.filter.counters = FilterCounters(**initial_state[self.COUNTERS_KEY])
        else:
            self.source.reset(None)
            self.filter.counters = FilterCounters()
            self.filter.start_pass()

    def next(self) -> Any:
        """Return the next non-empty processed batch."""
        while True:
            out = self.filter.process(next(self.source))
            if out is not None:
                return out

    def get_state(self) -> dict[str, Any]:
        """Return the source's state and the counters."""
        counters = self.filter.counters
        return {
            self.SOURCE_KEY: self.source.state_dict(),
            self.COUNTERS_KEY: {"seen": counters.seen, "kept": counters.kept, "dropped": counters.dropped},
        }
