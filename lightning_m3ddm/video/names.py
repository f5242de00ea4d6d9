"""Names of input videos within one run (pure)."""

from __future__ import annotations


def unique_name(name: str, seen: dict[str, int]) -> str:
    """``name`` the first time, then ``name-2``, ``name-3``, ...: inputs that share a name (e.g.
    ``clip.mp4`` in two folders) keep distinct outputs and results. ``seen`` counts the names
    given so far and is updated."""
    seen[name] = seen.get(name, 0) + 1
    return name if seen[name] == 1 else f"{name}-{seen[name]}"
