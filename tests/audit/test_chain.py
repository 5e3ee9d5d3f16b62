"""The canonical form of an entry and the chain walk, without servers."""

from __future__ import annotations

import hashlib

import msgspec
import pytest

from argus_core.audit.chain import GENESIS, ChainWalker, Row, canonical_body, entry_hash
from argus_core.bus import messages as m
from tests.audit.support import T0, events

pytestmark = pytest.mark.no_servers


def chain(n: int) -> list[Row]:
    rows: list[Row] = []
    prev = GENESIS
    for seq, event in enumerate(events(n), start=1):
        body = canonical_body(event)
        digest = entry_hash(seq, T0 + seq, prev, body.encode())
        rows.append((seq, T0 + seq, prev, digest, body))
        prev = digest
    return rows


def walk(rows: list[Row], chunk: int = 3) -> ChainWalker:
    walker = ChainWalker()
    for i in range(0, len(rows), chunk):
        if walker.feed(rows[i : i + chunk]):
            break
    walker.finish()
    return walker


def renumber(rows: list[Row], delta: int) -> list[Row]:
    return [(seq + delta, rec, prev, h, body) for seq, rec, prev, h, body in rows]


def test_entry_hash_is_the_documented_sha256() -> None:
    prev = bytes(range(32))
    body = '{"a":"é"}'
    expected = hashlib.sha256(b"argus-audit-v1\n42\n1700000000000000000\n" + prev + body.encode("utf-8")).digest()
    assert entry_hash(42, 1_700_000_000_000_000_000, prev, body.encode()) == expected


def test_canonical_body_sorts_keys_keeps_defaults_and_replaces_nul() -> None:
    event = m.AuditEvent(
        id="e1",
        at_ns=5,
        service="api",
        actor=m.Actor(subject="op\x00x", roles=("operator",)),
        action="playback.clip",
        outcome="success",
        details={"z": "1", "a": "2"},
    )
    body = canonical_body(event)
    assert body.startswith('{"action":"playback.clip","actor":{"client":"","roles":["operator"],"subject":"op\ufffdx"}')
    assert '"details":{"a":"2","z":"1"}' in body
    assert '"footage_end_ns":null' in body
    assert "\\u0000" not in body
    assert body == canonical_body(msgspec.json.decode(body.encode(), type=m.AuditEvent))  # stable on a round trip


def test_an_intact_chain_passes_in_any_chunking() -> None:
    rows = chain(10)
    for size in (1, 3, 10):
        walker = walk(rows, size)
        assert walker.finding is None
        assert (walker.count, walker.head_seq, walker.head_hash) == (10, 10, rows[-1][3])


def test_a_changed_body_is_named() -> None:
    rows = chain(10)
    seq, rec, prev, h, body = rows[3]
    rows[3] = (seq, rec, prev, h, body.replace("op-1", "op-2"))
    finding = walk(rows).finding
    assert finding is not None
    assert (finding.kind, finding.seq) == ("changed", 4)
    assert walk(rows).count == 3


def test_a_changed_and_rehashed_entry_is_named_by_the_next_link() -> None:
    rows = chain(10)
    seq, rec, prev, _, body = rows[3]
    body = body.replace("op-1", "op-2")
    rows[3] = (seq, rec, prev, entry_hash(seq, rec, prev, body.encode()), body)
    finding = walk(rows).finding
    assert finding is not None
    assert (finding.kind, finding.seq) == ("changed", 4)


def test_a_changed_last_entry_is_named() -> None:
    rows = chain(5)
    seq, rec, prev, h, body = rows[4]
    rows[4] = (seq, rec + 1, prev, h, body)
    finding = walk(rows).finding
    assert finding is not None
    assert (finding.kind, finding.seq) == ("changed", 5)


def test_a_removed_entry_is_named_with_or_without_renumbering() -> None:
    rows = chain(10)
    gap = rows[:3] + rows[4:]
    finding = walk(gap).finding
    assert finding is not None
    assert (finding.kind, finding.seq) == ("removed", 4)
    shifted = rows[:3] + renumber(rows[4:], -1)
    finding = walk(shifted).finding
    assert finding is not None
    assert (finding.kind, finding.seq) == ("removed", 4)


def test_an_inserted_entry_is_named_whether_forged_well_or_badly() -> None:
    rows = chain(10)
    seq3, _, _, h3, _ = rows[2]
    forged_body = canonical_body(events(1, actor="intruder")[0])
    good = (4, T0 + 4, h3, entry_hash(4, T0 + 4, h3, forged_body.encode()), forged_body)
    bad = (4, T0 + 4, h3, bytes(32), forged_body)
    for forged in (good, bad):
        finding = walk(rows[:3] + [forged] + renumber(rows[3:], 1)).finding
        assert finding is not None
        assert (finding.kind, finding.seq) == ("inserted", 4), finding.detail
    # A careful forger who also recomputed the hash of the entry after it (with its new number).
    seq, rec, prev, _, body = rows[3]
    moved = (5, rec, prev, entry_hash(5, rec, prev, body.encode()), body)
    finding = walk(rows[:3] + [good, moved] + renumber(rows[4:], 1)).finding
    assert finding is not None
    assert (finding.kind, finding.seq) == ("inserted", 4)


def test_missing_first_entries_and_a_changed_first_link() -> None:
    rows = chain(6)
    finding = walk(rows[2:]).finding
    assert finding is not None
    assert (finding.kind, finding.seq) == ("removed", 1)
    seq, rec, _, _, body = rows[0]
    relinked = (seq, rec, b"\x01" * 32, entry_hash(seq, rec, b"\x01" * 32, body.encode()), body)
    finding = walk([relinked] + rows[1:]).finding
    assert finding is not None
    assert (finding.kind, finding.seq) == ("changed", 1)


def test_a_walk_after_an_anchor_starts_from_its_hash() -> None:
    rows = chain(10)
    walker = ChainWalker(first_seq=6, prev_hash=rows[4][3])
    walker.feed(rows[5:])
    assert walker.finish() is None
    assert walker.count == 5
    wrong = ChainWalker(first_seq=6, prev_hash=GENESIS)
    wrong.feed(rows[5:])
    finding = wrong.finish()
    assert finding is not None
    assert finding.seq == 6
