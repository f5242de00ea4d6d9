"""Seeds derived from several parts (base seed, epoch, sample, step, rank, ...).

Hashing the parts, rather than adding multiples of them, keeps distinct tuples from
colliding (rank 1 of step 0 and rank 0 of step 1 draw differently) and gives the same
value in every process and on every machine.
"""

from __future__ import annotations

import hashlib


def stable_seed(*parts) -> int:
    """A 63-bit seed that depends on every part (ints, strings, tuples of them)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)
