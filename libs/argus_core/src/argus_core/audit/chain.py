"""The hash chain of the audit log: the canonical form of an entry, its hash, and the walk that checks a chain.

An entry of the chain is five values, stored as the columns of the same names in `audit_log`:

- `seq`: its position, 1, 2, 3, ... with no gaps (after a purge the first entry is the anchor's seq + 1);
- `recorded_ns`: when the audit service appended it (UTC nanoseconds since the epoch, never decreasing);
- `prev_hash`: the 32-byte hash of the entry before it (`GENESIS`, 32 zero bytes, for entry 1; after a purge the
  anchor's hash for the first remaining entry);
- `body`: the event, as canonical JSON text (see `canonical_body`);
- `hash`: SHA-256 over the bytes

      b"argus-audit-v1\\n" + ascii(seq) + b"\\n" + ascii(recorded_ns) + b"\\n" + prev_hash + utf8(body)

  where `ascii(n)` is the decimal form of an integer (a leading `-` for a negative, no padding) and `prev_hash`
  is the 32 raw bytes (its fixed length is what makes the concatenation unambiguous).

Canonical body: the `AuditEvent` encoded by msgspec as JSON with every field present (defaults included), object
keys in lexicographic order at every depth, no white space, strings as UTF-8 with `"`, `\\` and control characters
escaped, integers in decimal, `null` for an absent value. The verifier never re-encodes: it hashes the stored text,
so a later version of `AuditEvent` (new fields) does not change the hash of old entries.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Literal

import msgspec

from argus_core.bus.messages import AuditEvent

GENESIS = bytes(32)
DOMAIN = b"argus-audit-v1\n"
HASH_BYTES = 32

_ENCODER = msgspec.json.Encoder(order="sorted")
_NUL_ESCAPE = "\\u0000"

FindingKind = Literal["changed", "removed", "inserted", "rewritten", "checkpoint", "anchor", "schema"]

# One stored entry as the verifier reads it: (seq, recorded_ns, prev_hash, hash, body).
Row = tuple[int, int, bytes, bytes, str]


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    """Something verification found wrong; `seq` names the entry (0 when the finding is about no one entry)."""

    kind: FindingKind
    seq: int
    detail: str


def _without_nul(value: object) -> object:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {k: _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


def canonical_body(event: AuditEvent) -> str:
    """The canonical JSON text of `event` (what is stored and hashed).

    Postgres cannot hold U+0000 in text or jsonb, so a NUL in any string becomes U+FFFD first.
    """
    text = _ENCODER.encode(event).decode()
    if _NUL_ESCAPE in text:
        cleaned = msgspec.convert(_without_nul(msgspec.to_builtins(event)), AuditEvent)
        text = _ENCODER.encode(cleaned).decode()
    return text


def entry_hash(seq: int, recorded_ns: int, prev_hash: bytes, body: bytes) -> bytes:
    """SHA-256 of one entry in its canonical form (see the module docstring)."""
    return hashlib.sha256(b"%s%d\n%d\n%s%s" % (DOMAIN, seq, recorded_ns, prev_hash, body)).digest()


def row_hash(row: Row, seq: int | None = None) -> bytes:
    """The hash `row` should carry (at position `seq` instead of its own, to test a renumbering)."""
    s, recorded_ns, prev_hash, _, body = row
    return entry_hash(s if seq is None else seq, recorded_ns, prev_hash, body.encode())


class ChainWalker:
    """Checks rows in seq order, chunk by chunk, and names the first entry that was changed, removed or inserted.

    A row passes when it is at the expected position, its hash is the hash of its own content and its
    `prev_hash` is the hash of the row before. At the first row that does not pass, the walker looks at that row's
    neighbours to say what happened:

    - a position is skipped: those entries were *removed*;
    - the row before was accepted but this row is that row's original (its content hashes at the position before,
      or it links to what the row before linked to): the row before was *inserted*;
    - the next row links to the last good row: this row was *inserted* (renumbering the rest);
    - this row is the original of the next position (its hash matches at seq + 1): the entry at this position was
      *removed* and the later rows renumbered;
    - this row hashes correctly but does not link to the row before: the row before was *changed* and its hash
      recomputed (this row still records the original hash);
    - otherwise this row was *changed*.

    `feed` may be called from a worker thread (it only computes); the caller must not feed two chunks at once.
    """

    def __init__(self, first_seq: int = 1, prev_hash: bytes = GENESIS) -> None:
        self.first_seq = first_seq
        self.next_seq = first_seq
        self.head_hash = prev_hash  # hash of the last row that passed (or the anchor)
        self._prev_of_head: bytes | None = None  # what that row linked to
        self.count = 0
        self.finding: Finding | None = None
        self._suspect: Row | None = None

    @property
    def head_seq(self) -> int:
        return self.next_seq - 1

    @property
    def done(self) -> bool:
        return self.finding is not None

    def feed(self, rows: Iterable[Row]) -> Finding | None:
        """Check the next rows; the first finding, once there is one (later rows are then ignored)."""
        if self.finding is not None:
            return self.finding
        expected = self.next_seq
        head = self.head_hash
        prev_of_head = self._prev_of_head
        count = self.count
        sha256 = hashlib.sha256
        try:
            for row in rows:
                if self._suspect is not None:
                    self.head_hash, self._prev_of_head = head, prev_of_head
                    self.finding = self._classify(self._suspect, row)
                    return self.finding
                seq, recorded_ns, prev, stored, body = row
                if seq != expected:
                    self.finding = Finding(
                        kind="removed",
                        seq=expected,
                        detail=(
                            f"entry {expected} is missing"
                            if seq == expected + 1
                            else f"entries {expected} to {seq - 1} are missing"
                        )
                        + f" (the log goes on at {seq})",
                    )
                    return self.finding
                digest = sha256(b"%s%d\n%d\n%s%s" % (DOMAIN, seq, recorded_ns, prev, body.encode())).digest()
                if digest == stored and prev == head:
                    prev_of_head = head
                    head = stored
                    expected += 1
                    count += 1
                    continue
                self._suspect = row  # classified with the next row, in this chunk or the next
        finally:
            self.next_seq = expected
            self.head_hash = head
            self._prev_of_head = prev_of_head
            self.count = count
        return None

    def finish(self) -> Finding | None:
        """No more rows: classify a row still under suspicion (the last row of the log)."""
        if self.finding is None and self._suspect is not None:
            self.finding = self._classify(self._suspect, None)
        return self.finding

    def _classify(self, row: Row, following: Row | None) -> Finding:
        seq, _, prev, stored, _ = row
        head = self.head_hash
        prev_of_head = self._prev_of_head
        self_consistent = row_hash(row) == stored
        # The row accepted before this one was not in the original chain: this row is its original.
        if prev_of_head is not None and prev == prev_of_head and (row_hash(row, seq - 1) == stored or self_consistent):
            return Finding(
                kind="inserted",
                seq=seq - 1,
                detail=f"entry {seq - 1} was inserted: entry {seq} is the original entry {seq - 1} and links past it",
            )
        # This row was not in the original chain: the next row is the original of this position.
        if following is not None:
            nseq, _, nprev, nstored, _ = following
            if nprev == head and (row_hash(following, seq) == nstored or row_hash(following) == nstored):
                return Finding(
                    kind="inserted",
                    seq=seq,
                    detail=f"entry {seq} was inserted: entry {nseq} is the original entry {seq} and links past it",
                )
        # This row is the original of the next position: the entry at this position was removed.
        if prev != head and row_hash(row, seq + 1) == stored:
            return Finding(
                kind="removed",
                seq=seq,
                detail=f"entry {seq} was removed and the later ones renumbered (entry {seq} is the original {seq + 1})",
            )
        if self_consistent and seq - 1 >= self.first_seq:
            return Finding(
                kind="changed",
                seq=seq - 1,
                detail=(
                    f"entry {seq - 1} was changed and its hash recomputed: entry {seq} recorded a different hash "
                    f"for it ({prev.hex()[:16]}..., now {head.hex()[:16]}...)"
                ),
            )
        if self_consistent:
            return Finding(
                kind="changed",
                seq=seq,
                detail=f"entry {seq} does not link to the start of the chain (its prev_hash was changed)",
            )
        return Finding(kind="changed", seq=seq, detail=f"entry {seq} does not match its hash: its content was changed")
