"""Which fields read the viewer: marked where they are declared, collected from the schema.

A threadEvents frame is rendered once for all subscribers (``subscriptions.broadcast``)
only when its selection reads no field marked ``metadata=READS_VIEWER`` (one that depends
on or acts for the viewer); the marks are read back, so there is no list to keep in step.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any, Final

from strawberry import Schema
from strawberry.types.base import StrawberryObjectDefinition

_MARK: Final = "threadline.reads_viewer"
READS_VIEWER: Final[Mapping[str, Any]] = {_MARK: True}

_collected: weakref.WeakKeyDictionary[Schema, frozenset[str]] = weakref.WeakKeyDictionary()


def viewer_fields(schema: Schema) -> frozenset[tuple[str, str]]:
    """(type, field) GraphQL names of every field marked ``READS_VIEWER``."""
    marked: set[tuple[str, str]] = set()
    converter = schema.config.name_converter
    for type_name, concrete in schema.schema_converter.type_map.items():
        definition = concrete.definition
        if not isinstance(definition, StrawberryObjectDefinition):
            continue
        for field in definition.fields:
            if field.metadata.get(_MARK):
                marked.add((type_name, converter.get_graphql_name(field)))
    return frozenset(marked)


def viewer_field_names(schema: Schema) -> frozenset[str]:
    """The names of the marked fields, whatever their type (a selection is read by name)."""
    names = _collected.get(schema)
    if names is None:
        names = _collected[schema] = frozenset(name for _, name in viewer_fields(schema))
    return names
