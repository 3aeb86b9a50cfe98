"""The `organisation` projection: grids, and who held which post of a grid's chain, when.

Fed by the `Grid` aggregate's events (`loop.organisation`): a grid is established, a person is
appointed to a post (ending the tenure of whoever held it), a holder is relieved. Each tenure is
a row `[from_at, to_at)` in business time; the reports read who held a post at a step's deadline.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, select, update

from loop.organisation import Grid
from projections.cases import topic_filter, upsert
from projections.tables import grids, post_tenures

__all__ = ["OrganisationProjection"]

_is_grid_event = topic_filter(Grid.Event)


class OrganisationProjection:
    """Grids and post tenures, from `Grid` events."""

    name = "organisation"
    tables: tuple[Table, ...] = (grids, post_tenures)

    def __init__(self) -> None:
        self.codes: dict[str, str] = {}  # aggregate id (hex) -> grid code

    def reset(self) -> None:
        self.codes.clear()

    def wants(self, topic: str) -> bool:
        """Whether events of `topic` change these tables (the runner decodes no others for
        this projection while a fold helper folds the cases)."""
        return _is_grid_event(topic)

    def process(self, conn: Connection, items: Sequence[tuple[int, Any]]) -> None:
        for _, event in items:
            if isinstance(event, Grid.Established):
                self.codes[event.originator_id.hex] = event.code
                upsert(conn, grids, [{"code": event.code, "aggregate_id": event.originator_id.hex,
                                      "name": event.name, "level": event.level,
                                      "parent": event.parent}])  # fmt: skip
            elif isinstance(event, Grid.Appointed):
                grid = self._code(conn, event)
                if event.replaces:
                    self._end(conn, grid, event.post, event.replaces, event.at)
                upsert(conn, post_tenures, [{"grid": grid, "post": event.post,
                                             "person": event.person, "from_at": event.at,
                                             "to_at": None}])  # fmt: skip
            elif isinstance(event, Grid.Relieved):
                self._end(conn, self._code(conn, event), event.post, event.person, event.at)

    def _code(self, conn: Connection, event: Grid.Event) -> str:
        key = event.originator_id.hex
        if key not in self.codes:
            code = conn.execute(select(grids.c.code).where(grids.c.aggregate_id == key)).scalar()
            if code is None:
                raise ValueError(f"{type(event).__qualname__} of a grid never established")
            self.codes[key] = str(code)
        return self.codes[key]

    @staticmethod
    def _end(conn: Connection, grid: str, post: str, person: str, at: datetime) -> None:
        conn.execute(
            update(post_tenures)
            .where(
                post_tenures.c.grid == grid,
                post_tenures.c.post == post,
                post_tenures.c.person == person,
                post_tenures.c.to_at.is_(None),
            )
            .values(to_at=at)
        )
