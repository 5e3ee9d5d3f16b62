"""Deleting recording objects for good.

In a bucket without versioning a multi-object delete removes the objects. In a versioned bucket (every bucket made
with object lock is one) a plain delete only adds a delete marker and the footage stays, so here every version and
delete marker of each key is listed and deleted by version id: that is what a legal hold refuses, so a held object
survives even a mistaken delete. Versions are listed per "hour folder" of the recorder's key layout
(`camera[/stream]/YYYY/MM/DD/HH/`), one listing for all the keys of a batch that share it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence

from argus_core.storage import ObjectStore

log = logging.getLogger(__name__)

MAX_DELETE = 1000  # S3's limit on keys per multi-object delete


def version_prefix(key: str) -> str:
    """The prefix listed to find a key's versions: its hour folder, or the key itself for other layouts."""
    parts = key.split("/")
    if len(parts) >= 6:
        return "/".join(parts[:-2]) + "/"
    return key


class RecordingObjects:
    """The recordings bucket, as retention deletes from it."""

    def __init__(self, store: ObjectStore, bucket: str, *, versioned: bool, listings: int = 4) -> None:
        self.store = store
        self.bucket = bucket
        self.versioned = versioned
        self._listings = asyncio.Semaphore(listings)

    @classmethod
    async def open(cls, store: ObjectStore, bucket: str) -> RecordingObjects:
        versioned = await store.versioning_enabled(bucket)
        if versioned:
            log.info("bucket %s keeps versions: segments are deleted version by version", bucket)
        return cls(store, bucket, versioned=versioned)

    async def delete(self, keys: Sequence[str]) -> set[str]:
        """Delete `keys` (every version of each); the keys the store refused. A key already gone is not refused."""
        if not keys:
            return set()
        if not self.versioned:
            refused: set[str] = set()
            for i in range(0, len(keys), MAX_DELETE):
                refused.update(await self.store.delete_many(self.bucket, keys[i : i + MAX_DELETE]))
            return refused
        return await self._delete_versions(keys)

    async def _delete_versions(self, keys: Sequence[str]) -> set[str]:
        wanted = set(keys)
        by_prefix: dict[str, list[str]] = defaultdict(list)
        for key in keys:
            by_prefix[version_prefix(key)].append(key)

        async def versions(prefix: str) -> list[tuple[str, str | None]]:
            async with self._listings:
                listed = await self.store.list_versions(self.bucket, prefix)
            return [(v.key, v.version_id) for v in listed if v.key in wanted]

        async with asyncio.TaskGroup() as tasks:
            listings = [tasks.create_task(versions(p)) for p in by_prefix]
        found = [t.result() for t in listings]
        items = [item for group in found for item in group]
        refused: set[str] = set()
        for i in range(0, len(items), MAX_DELETE):
            refused.update(await self.store.delete_versions(self.bucket, items[i : i + MAX_DELETE]))
        return refused
