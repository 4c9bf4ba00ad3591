"""The one seam onto SQLAlchemy's internals: every name of it that is not public API.

The driver fast paths build instances and values as SQLAlchemy's loading would;
what they need of its insides is checked here at import, so that an upgrade that
drops a name fails at start-up naming it, not inside a request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import sqlalchemy
from sqlalchemy import bindparam, literal_column, select
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.engine import Dialect
from sqlalchemy.orm.instrumentation import ClassManager
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BindParameter, ClauseElement
from sqlalchemy.types import TypeEngine

# Written against this minor version; a newer one must pass test_driver_reads.
WRITTEN_FOR = "2.1"

Processor = Callable[[Any], Any] | None
ASYNCPG = PGDialect_asyncpg()  # type: ignore[no-untyped-call]


def compile_for_asyncpg(statement: ClauseElement) -> tuple[str, list[BindParameter[Any]]]:
    """The SQL asyncpg takes (``$n`` parameters) and the bind parameter of each ``$n``."""
    compiled = cast(SQLCompiler, statement.compile(dialect=ASYNCPG))
    return compiled.string, [compiled.binds[name] for name in compiled.positiontup or ()]


def _missing() -> list[str]:
    try:
        probe: ClauseElement = select(literal_column("1")).where(
            literal_column("a") == bindparam("x")
        )
        sql, binds = compile_for_asyncpg(probe)
        if "$1" not in sql or [b.key for b in binds] != ["x"]:
            return ["asyncpg's numeric_dollar compilation with positiontup"]
    except AttributeError as exc:
        return [f"SQLCompiler.{exc.name}"]
    needed = {
        "ClassManager.new_instance": (ClassManager, "new_instance"),
        "TypeEngine.dialect_impl": (TypeEngine, "dialect_impl"),
        "TypeEngine.result_processor": (TypeEngine, "result_processor"),
        "TypeEngine.bind_processor": (TypeEngine, "bind_processor"),
    }
    return [name for name, (owner, attribute) in needed.items() if not hasattr(owner, attribute)]


if _gone := _missing():
    raise ImportError(
        f"SQLAlchemy {sqlalchemy.__version__} lacks {', '.join(_gone)} "
        f"(threadline.models.seam was written for {WRITTEN_FOR}.x)"
    )


def instance_factory(model: type[Any]) -> Callable[[], Any]:
    """What the ORM calls to make an instance it loads: no constructor, no change events."""
    factory: Callable[[], Any] = model.__mapper__.class_manager.new_instance
    return factory


def value_reader(type_: TypeEngine[Any], dialect: Dialect) -> Processor:
    """What SQLAlchemy does to a value of ``type_`` it reads (None: nothing)."""
    return type_.dialect_impl(dialect).result_processor(dialect, None)


def value_writer(type_: TypeEngine[Any], dialect: Dialect) -> Processor:
    """What SQLAlchemy does to a value of ``type_`` before it sends it (None: nothing)."""
    impl = type_.dialect_impl(dialect)
    # An array of values that need nothing is only copied into a new list (by a
    # Python function per element); a group-commit send has eight such arrays.
    if (
        isinstance(impl, sqlalchemy.ARRAY)
        and impl.dimensions in (None, 1)
        and value_writer(impl.item_type, dialect) is None
    ):
        return list
    return impl.bind_processor(dialect)
