"""Which share of a job a file belongs to when N machines split it (`--shard K/N` of
`tb augment` and `tb datasets pack`): one rule, so both commands split a folder alike."""

from __future__ import annotations

import hashlib


def in_shard(relative: str, shard: tuple[int, int]) -> bool:
    """Whether the file at `relative` (POSIX, relative to SRC) belongs to shard (K, N).

    A hash rather than a position in the sorted list: a file's shard does not change when
    other files are added or removed, so a retried shard redoes only its own files.
    """
    index, count = shard
    digest = hashlib.blake2b(relative.encode(), digest_size=8, person=b"tb-shard").digest()
    return int.from_bytes(digest, "little") % count == index
