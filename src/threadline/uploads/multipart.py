"""The GraphQL multipart request's ``map`` (github.com/jaydenseric/graphql-multipart-request-spec):
file field names to the paths of ``null`` placeholders in ``operations``, checked, then filled.

A file may fill several paths (one object, rewound by readers); any other mistake of the
client is a ``MultipartError`` that says which.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class MultipartError(ValueError):
    """A multipart request that does not follow the spec; the message says how."""


def text_field(form: Mapping[str, Any], name: str) -> str:
    """The JSON text of the form field ``operations`` or ``map`` ("{}" when absent)."""
    value = form.get(name, "{}")
    if not isinstance(value, str):
        raise MultipartError(f"The `{name}` field must be a text field, not a file")
    return value


def place_files(operations: Any, files_map: Any, files: Mapping[str, Any]) -> Any:
    """``operations`` with each mapped file at its paths (in place), or MultipartError."""
    if not isinstance(files_map, dict):
        raise MultipartError(
            "The `map` field must be a JSON object from file field names to lists of paths"
        )
    for name, paths in files_map.items():
        if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
            raise MultipartError(f"The `map` entry {name!r} must be a non-empty list of paths")
        if name not in files:
            raise MultipartError(f"The `map` names a file field {name!r} the request lacks")
        for path in paths:
            container, key = _placeholder(operations, path)
            container[key] = files[name]
    return operations


def _placeholder(operations: dict[str, Any] | list[Any], path: str) -> tuple[Any, Any]:
    """The container and key of the null placeholder at ``path`` (dot-separated)."""
    container: Any
    key: Any
    where: Any = operations
    for part in path.split("."):
        if isinstance(where, dict) and part in where:
            container, key = where, part
        elif isinstance(where, list) and part.isdecimal() and int(part) < len(where):
            container, key = where, int(part)
        else:
            raise MultipartError(f"The `map` path {path!r} leads to nothing in `operations`")
        where = container[key]
    if where is not None:
        raise MultipartError(
            f"The `map` path {path!r} must lead to a null placeholder in `operations`"
        )
    return container, key
