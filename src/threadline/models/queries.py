"""Hot reads written once: a SQLAlchemy statement, and the asyncpg SQL compiled from it.

On PostgreSQL SQLAlchemy's work per statement and row costs more than a page's
batch reads themselves. Where the session allows (``DRIVER_ROWS``/``DRIVER_ENTITIES``
in its ``info``, set by ``db.Database`` while FAST_PATHS is on) the compiled SQL runs
on the session's connection and rows are built as the ORM builds them; anywhere
else the statement runs through the session.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Column, any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import BinaryExpression, BindParameter, ClauseElement
from sqlalchemy.sql.selectable import Select
from sqlalchemy.sql.visitors import replacement_traverse

from threadline.db import DRIVER_ENTITIES, DRIVER_ROWS, Database, dialect_of, driver_fetch
from threadline.models.seam import (
    ASYNCPG,
    Processor,
    compile_for_asyncpg,
    instance_factory,
    value_reader,
    value_writer,
)

# Any statement's row shape.
AnySelect = Select[*tuple[Any, ...]]


def _ids_as_array(element: Any, **_: Any) -> Any:
    """``col IN (expanding :ids)`` -> ``col = ANY(:ids)``, the ids one typed array."""
    if (
        isinstance(element, BinaryExpression)
        and element.operator is operators.in_op
        and isinstance(element.right, BindParameter)
        and element.right.expanding
    ):
        key = element.right.key
        return element.left == any_(bindparam(key, type_=ARRAY(element.left.type)))
    return None


@dataclass(frozen=True, slots=True)
class _Entity:
    """An entity's run of columns in a driver record: where, what to build, how."""

    start: int
    stop: int
    factory: Callable[[], Any]
    keys: tuple[str, ...]
    # Columns of its primary key, relative to start: all NULL is "no row" (outer join).
    key_positions: tuple[int, ...]


class DriverStatement:
    """A statement compiled once to asyncpg's SQL (``$n`` parameters), and its arguments
    processed as SQLAlchemy would. An expanding ``IN`` becomes ``= ANY($n)``: one
    prepared statement serves any count of ids."""

    def __init__(self, statement: ClauseElement) -> None:
        driver_form = cast(ClauseElement, replacement_traverse(statement, {}, _ids_as_array))
        self.sql, self._binds = compile_for_asyncpg(driver_form)
        self._processors = [value_writer(bind.type, ASYNCPG) for bind in self._binds]

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        args = []
        for bind, process in zip(self._binds, self._processors, strict=True):
            if bind.key in params:
                value = params[bind.key]
            elif bind.required:
                raise KeyError(f"{bind.key!r} is a parameter of this statement")
            else:
                value = bind.effective_value
            args.append(value if process is None or value is None else process(value))
        return args


class Query:
    """One read, written once as ``statement`` (bind parameters by name)."""

    # Every one built, for the test that runs each both ways and compares.
    built: list[Query] = []

    def __init__(self, statement: AnySelect) -> None:
        self.statement = statement
        Query.built.append(self)
        self.driver = DriverStatement(statement)
        self.sql = self.driver.sql
        columns = list(statement.selected_columns)
        self._types = [c.type for c in columns]
        self._entities = _entity_layout(statement, columns)
        # Per dialect name: processors of each column.
        self._results: dict[str, list[Processor]] = {}

    async def tuples(self, session: AsyncSession, **params: Any) -> list[tuple[Any, ...]]:
        """Every row as a tuple (an entity as its instance, or None if outer-joined away)."""
        # Instances built from driver rows are in no session: only for sessions that
        # never write back (an operation's read session).
        if session.info.get(DRIVER_ENTITIES if self._entities else DRIVER_ROWS):
            records = await driver_fetch(session, self.sql, *self.driver.args(params))
            return self._build(records, dialect_of(session))
        return [tuple(row) for row in await session.execute(self.statement, params)]

    async def pooled(self, db: Database, name: str, **params: Any) -> list[tuple[Any, ...]]:
        """``tuples`` on a connection of its own: with the fast paths on, the driver's
        pool (a third of a session's CPU, for a read made once per live event)."""
        if db.fast_paths:
            async with db.driver_connection(name) as conn:
                records = await conn.fetch(self.sql, *self.driver.args(params))
            return self._build(records, db.engine.dialect)
        async with db.reading() as session:
            return await self.tuples(session, **params)

    async def scalars(self, session: AsyncSession, **params: Any) -> list[Any]:
        """The first column (or entity) of every row."""
        return [row[0] for row in await self.tuples(session, **params)]

    def _build(self, records: Sequence[Sequence[Any]], dialect: Dialect) -> list[tuple[Any, ...]]:
        processors = self._results.get(dialect.name)
        if processors is None:
            processors = self._results[dialect.name] = [
                value_reader(t, dialect) for t in self._types
            ]
        if not self._entities:
            if not any(processors):
                return [tuple(r) for r in records]
            return [
                tuple(
                    v if p is None or v is None else p(v)
                    for p, v in zip(processors, r, strict=True)
                )
                for r in records
            ]
        layouts = [
            (e, list(zip(e.keys, processors[e.start : e.stop], strict=True)))
            for e in self._entities
        ]
        return [tuple(_instance(e, layout, r) for e, layout in layouts) for r in records]


def _instance(entity: _Entity, layout: list[tuple[str, Processor]], record: Sequence[Any]) -> Any:
    """The entity's instance from its run of columns in ``record``, as the ORM loads it."""
    mine = record[entity.start : entity.stop]
    if all(mine[i] is None for i in entity.key_positions):
        return None  # outer-joined away
    instance = entity.factory()
    values = instance.__dict__
    for (key, process), value in zip(layout, mine, strict=True):
        values[key] = value if process is None or value is None else process(value)
    return instance


def _entity_layout(statement: AnySelect, columns: list[Any]) -> list[_Entity]:
    """Each selected entity's columns, when the statement selects whole entities only."""
    descriptions = statement.column_descriptions
    if not descriptions or any(d["expr"] is not d["entity"] for d in descriptions):
        return []  # plain columns (mixing entities and columns is not needed so far)
    layout: list[_Entity] = []
    start = 0
    for description in descriptions:
        mapper = description["entity"].__mapper__
        stop = start
        while stop < len(columns) and isinstance(columns[stop], Column):
            if columns[stop].table is not mapper.local_table:
                break
            stop += 1
        mine = columns[start:stop]
        keys = tuple(mapper.get_property_by_column(c).key for c in mine)
        primary = {c.key for c in mapper.local_table.primary_key}
        layout.append(
            _Entity(
                start=start,
                stop=stop,
                factory=instance_factory(description["entity"]),
                keys=keys,
                key_positions=tuple(i for i, c in enumerate(mine) if c.key in primary),
            )
        )
        start = stop
    if start != len(columns):
        raise ValueError("a Query's entities must be whole mapped tables")
    return layout


class Write:
    """One self-contained write that emits no event (a WebSocket's session row).

    With the fast paths on it runs on the driver's pool in one round trip (no BEGIN
    and COMMIT); anywhere else in a transaction of its own.
    """

    def __init__(self, statement: Any) -> None:
        self.statement = statement
        self.driver = DriverStatement(statement)

    async def run(self, db: Database, name: str, **params: Any) -> None:
        if db.fast_paths:
            async with db.driver_connection(name) as conn:
                await conn.execute(self.driver.sql, *self.driver.args(params))
            return
        async with db.transaction(name) as uow:
            await uow.session.execute(self.statement, params)
