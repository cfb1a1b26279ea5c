"""Statements kept planned, per connection, and their stages' results while still right.

A UDF statement run again with the same text, parameters and settings skips parsing and
planning while nothing the plan read may have changed (:func:`smolql.changes.stamp`: no
write through SmolQL, no write to the database file). Its stage tables (one per stage,
named with the statement's own tag) are reused as well, so the run is the final query alone,
when the last run:

* ran every stage inside DuckDB (:mod:`smolql.executor.cached`) and found every image value
  vouched for by :data:`~smolql.watch.WATCHER` (none stat'ed or read), with no image error;
* wrote nothing and saw no write during the run (the stamp did not move);
* read only stored tables of the database file, through its views too (a database in memory,
  a temporary table, a registered data frame, a file or another attached database can change
  with no trace in the stamp: :func:`smolql.changes.unwitnessed`);

and since then no write happened and no vouched-for file changed (the watcher's generation
did not move). Anything else runs the stages again: never a stale answer, only a slower one.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import OrderedDict
from dataclasses import dataclass, field

import duckdb

from smolql.changes import Stamp, stamp
from smolql.config import Settings
from smolql.executor.stage import StageStats
from smolql.planner.physical import StagePlan
from smolql.sql.logical import QueryPlan
from smolql.sql.run import clear_name
from smolql.watch import WATCHER

SIZE = 16  # statements kept per connection (each may hold its stages' tables)


@dataclass
class Prepared:
    """One statement, planned: what the executor runs and EXPLAIN ANALYZE reports."""

    plan: QueryPlan
    physical: dict[int, StagePlan]
    final: str  # the final query's SQL
    final_params: dict | None
    stamp: Stamp  # the witnesses when planned, or after its last run
    notes: list[str] = field(default_factory=list)  # planner warnings, repeated on each run
    stats: dict[int, StageStats] = field(default_factory=dict)  # the run that made the tables
    watched: int = -1  # the watcher's generation before that run; -1: tables not reusable
    unwitnessed: str = ""  # why a change to what it reads may go unseen (changes.unwitnessed)


class Plans:
    """The statements a connection ran lately (least recently used dropped beyond
    :data:`SIZE`, with their stage tables)."""

    def __init__(self, database: str | None) -> None:
        self.database = database  # its file (None: a database in memory)
        self._entries: OrderedDict[tuple, Prepared] = OrderedDict()
        self._tags = 0

    @staticmethod
    def key(text: str, values: dict, settings: Settings) -> tuple:
        return (text, repr(sorted(values.items())), repr(sorted(settings.as_dict().items())))

    def get(self, con: duckdb.DuckDBPyConnection, key: tuple) -> Prepared | None:
        """The statement planned under ``key`` if its plan still holds."""
        prepared = self._entries.get(key)
        if prepared is None:
            return None
        if prepared.stamp != stamp(self.database):
            self._drop(con, key)
            return None
        self._entries.move_to_end(key)
        return prepared

    def tag(self) -> str:
        self._tags += 1
        return f"p{self._tags}_"

    def put(self, con: duckdb.DuckDBPyConnection, key: tuple, prepared: Prepared) -> None:
        if key in self._entries:
            self._drop(con, key)
        self._entries[key] = prepared
        while len(self._entries) > SIZE:
            self._drop(con, next(iter(self._entries)))

    def reusable(self, prepared: Prepared, settings: Settings) -> bool:
        """Whether ``prepared``'s stage tables are right now (call after :meth:`get`): never
        when a change to what it reads could go unseen (:func:`smolql.changes.unwitnessed`)."""
        return (
            settings.cache
            and not prepared.unwitnessed
            and prepared.watched >= 0
            and WATCHER.generation() == prepared.watched
        )

    def ran(self, prepared: Prepared, before: Stamp, watched: int, stats: dict) -> None:
        """Record a run that started at ``before`` (and the watcher's ``watched``): its tables
        are reusable if every stage allows it and nothing was written meanwhile."""
        after = stamp(self.database)
        clean = after == before and all(s.reusable for s in stats.values())
        prepared.watched = watched if clean and stats else -1
        prepared.stats = stats
        if after.writes == before.writes:  # only cache rows may have been written
            prepared.stamp = after

    def reused(self, prepared: Prepared) -> dict[int, StageStats]:
        """The statistics of a run that reused the tables."""
        return {
            i: dataclasses.replace(s, seconds=0.0, checked=0, inferred=0, nodes={}, reused=True)
            for i, s in prepared.stats.items()
        }

    def _drop(self, con: duckdb.DuckDBPyConnection, key: tuple) -> None:
        prepared = self._entries.pop(key)
        for stage in prepared.plan.stages:
            with contextlib.suppress(duckdb.Error):  # closed: its temporary tables went with it
                clear_name(con, stage.table)


__all__ = ["Plans", "Prepared"]
