"""The one seam onto SQLAlchemy's internals: every name of it that is not public API.

The driver fast paths (``models.queries``, ``models.sends``) build instances and
values as SQLAlchemy's own loading would; what they need of its insides is here,
checked at import, so that an upgrade that drops a name fails at start-up with one
line naming it, not later inside a request. ``FAST_PATHS=off`` runs without them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy
from sqlalchemy.engine import AdaptedConnection, Dialect
from sqlalchemy.orm.instrumentation import ClassManager
from sqlalchemy.types import TypeEngine

# Written against this minor version; a newer one must pass test_driver_reads.
WRITTEN_FOR = "2.1"

Processor = Callable[[Any], Any] | None


def _missing() -> list[str]:
    needed = {
        "ClassManager.new_instance": (ClassManager, "new_instance"),
        "AdaptedConnection.driver_connection": (AdaptedConnection, "driver_connection"),
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


def driver_of(dbapi_connection: Any) -> Any:
    """The driver's own connection (asyncpg's) under SQLAlchemy's adapted one, or None."""
    return getattr(dbapi_connection, "driver_connection", None)


def result_processor(type_: TypeEngine[Any], dialect: Dialect) -> Processor:
    """What SQLAlchemy does to a value of ``type_`` it reads (None: nothing)."""
    return type_.dialect_impl(dialect).result_processor(dialect, None)


def bind_processor(type_: TypeEngine[Any], dialect: Dialect) -> Processor:
    """What SQLAlchemy does to a value of ``type_`` before it sends it (None: nothing)."""
    return type_.dialect_impl(dialect).bind_processor(dialect)
