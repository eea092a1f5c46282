"""The paths a manifest reader has seen, held compactly: how a stream of millions of rows tells a repeated path.

Each path is kept as its 128-bit blake2b digest in an open-addressing table of two flat ``array('Q')``
columns, a quarter to a half full: 32 to 64 bytes a path (plus the old table while it doubles). Measured
with benchmarks/scale.py at 200,000 rows, ``oodfilter report`` peaked 17 MB above the same run without
the check, where a Python ``set`` of the digests took 27 MB. Two different paths share a digest with odds
of about n²/2¹²⁹, nil at any manifest size.
"""

from __future__ import annotations

import hashlib
from array import array

_FIRST_SLOTS = 1024
_LOW = (1 << 64) - 1
_blake2b = hashlib.blake2b


class PathSet:
    """A set of paths, holding a 128-bit digest of each."""

    def __init__(self) -> None:
        self._count = 0
        self._mask = _FIRST_SLOTS - 1
        self._high = array("Q", bytes(8 * _FIRST_SLOTS))  # 0: an empty slot (a digest's high half is never 0)
        self._low = array("Q", bytes(8 * _FIRST_SLOTS))

    def __len__(self) -> int:
        return self._count

    def add(self, path: str) -> bool:
        """Add ``path``; return whether it was new (False: it was already in the set)."""
        key = int.from_bytes(_blake2b(path.encode("utf-8", "surrogatepass"), digest_size=16).digest(), "little")
        if not self._insert(key >> 64 | 1, key & _LOW):
            return False
        self._count += 1
        if 2 * self._count > self._mask:
            self._grow()
        return True

    def _insert(self, high: int, low: int) -> bool:
        table_high, table_low, mask = self._high, self._low, self._mask
        slot = low & mask
        held = table_high[slot]
        while held:
            if held == high and table_low[slot] == low:
                return False
            slot = (slot + 1) & mask
            held = table_high[slot]
        table_high[slot] = high
        table_low[slot] = low
        return True

    def _grow(self) -> None:
        """Double the table (kept at most half full, so a lookup probes about 1.5 slots)."""
        old = zip(self._high, self._low, strict=True)
        slots = 2 * (self._mask + 1)
        self._mask = slots - 1
        self._high, self._low = array("Q", bytes(8 * slots)), array("Q", bytes(8 * slots))
        for high, low in old:
            if high:
                self._insert(high, low)
