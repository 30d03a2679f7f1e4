"""File names shared by artifact layouts: shard names with a fixed pad, so `sorted(glob)` gives shard order.

Writing files (atomic writes, JSONL, `.npy`, digests, stale-file removal) is not a layout: it is `hnm_cli.fileio`.
"""

from __future__ import annotations

SHARD_DIGITS = 5


def shard_name(prefix: str, shard: int, suffix: str) -> str:
    """`<prefix>-NNNNN.<suffix>`: the fixed 5-digit pad makes `sorted(glob)` give shard order."""
    return f"{prefix}-{shard:0{SHARD_DIGITS}d}.{suffix}"


def rows_name(shard: int) -> str:
    """File name of a JSONL record shard (`rows-00000.jsonl`), used by mine and eval outputs."""
    return shard_name("rows", shard, "jsonl")
