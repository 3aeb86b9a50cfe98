"""The writer's chain arithmetic (`adapters.store._Chainer`): the case's previous hash is always
its event one version earlier, and the cache of case hashes is never trusted after another
writer has written where this one thought it had."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import UUID

from eventsourcing.persistence import StoredEvent

from adapters.store import GENESIS, _Chainer, chain_link, frame, to_micros

CASE = UUID(int=7)
AT = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
MICROS = to_micros(AT)


def _event(version: int, body: bytes = b"{}") -> StoredEvent:
    return StoredEvent(CASE, version, "loop.hazard:Hazard.Event", body)


def _link(
    chainer: _Chainer,
    last: tuple[int, bytes, int] | None,
    event: StoredEvent,
    position: int,
    chain: dict[tuple[str, int], bytes],
) -> bytes:
    """Chain one event as a recorder would; `chain` stands for the chain table."""
    asked: list[Sequence[tuple[str, int]]] = []

    def lookup(wanted: Sequence[tuple[str, int]]) -> dict[str, bytes]:
        asked.append(wanted)
        return {key: chain[(key, version)] for key, version in wanted if (key, version) in chain}

    rows, head, _micros = chainer.link(last, [event], [position], AT, lookup)
    ((_, key, version, _, hashed),) = rows
    chain[(key, version)] = hashed
    assert head == hashed
    return hashed


def test_the_case_previous_hash_is_the_event_one_version_earlier() -> None:
    chainer, chain = _Chainer(), dict[tuple[str, int], bytes]()
    h1 = _link(chainer, None, _event(1), 1, chain)
    chainer.done([1])
    assert h1 == chain_link(GENESIS, GENESIS, 1, MICROS, frame(CASE.hex, 1, _event(1).topic, b"{}"))
    h2 = _link(chainer, (1, h1, MICROS), _event(2), 2, chain)
    assert h2 == chain_link(h1, h1, 2, MICROS, frame(CASE.hex, 2, _event(2).topic, b"{}"))


def test_a_cache_left_by_a_failed_commit_is_not_trusted_when_another_writer_filled_the_gap() -> (
    None
):
    chainer, chain = _Chainer(), dict[tuple[str, int], bytes]()
    h1 = _link(chainer, None, _event(1), 1, chain)
    chainer.done([1])
    ours = _link(chainer, (1, h1, MICROS), _event(2, b'{"ours":1}'), 2, chain)
    chainer.done([2])  # done runs inside the transaction; its commit then fails
    # Another writer commits its own version 2 at the same position.
    theirs = chain_link(h1, h1, 2, MICROS, frame(CASE.hex, 2, _event(2).topic, b'{"theirs":1}'))
    assert theirs != ours
    chain[(CASE.hex, 2)] = theirs
    h3 = _link(chainer, (2, theirs, MICROS), _event(3), 3, chain)
    topic = _event(3).topic
    assert h3 == chain_link(theirs, theirs, 3, MICROS, frame(CASE.hex, 3, topic, b"{}"))
