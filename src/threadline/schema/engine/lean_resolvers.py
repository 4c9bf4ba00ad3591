"""Direct resolver calls for the fields strawberry would wrap on every call.

strawberry converts arguments and chains field extensions per call, which on a page of
50 messages costs more than the resolvers. Decided once here instead: arguments convert
with functions made from the input types, and permission checks run before the call
(any answer but True hands the call back to strawberry's resolver, which words the
refusal). Anything else (enums, custom conversion, other extensions, subscriptions,
schemas with exception handlers) keeps strawberry's resolver.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import MISSING
from typing import Any

import strawberry
from graphql import (
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLResolveInfo,
    GraphQLScalarType,
)
from strawberry.permission import BasePermission, PermissionExtension
from strawberry.schema.config import StrawberryConfig
from strawberry.types.base import StrawberryObjectDefinition
from strawberry.types.field import StrawberryField

from threadline.schema.engine.internals import graphql_schema, info_maker

# The link from a graphql-core type or field back to its strawberry definition.
BACKREF = "strawberry-definition"

Convert = Callable[[Any], Any]


def _same(value: Any) -> Any:
    return value


def converter(graphql_type: GraphQLInputType, config: StrawberryConfig) -> Convert | None:
    """GraphQL input value -> the value strawberry would pass; None where only it can."""
    if isinstance(graphql_type, GraphQLNonNull):
        return converter(graphql_type.of_type, config)
    if isinstance(graphql_type, GraphQLScalarType):
        return _same  # graphql-core already parsed it; strawberry passes it on as is
    if isinstance(graphql_type, GraphQLList):
        item = converter(graphql_type.of_type, config)
        if item is None:
            return None
        if item is _same:
            # A copy, as strawberry makes: graphql-core shares defaults between requests.
            return lambda value: None if value is None else list(value)
        return lambda value: None if value is None else [item(x) for x in value]
    if isinstance(graphql_type, GraphQLInputObjectType):
        return _input_converter(graphql_type, config)
    return None


def _input_converter(
    graphql_type: GraphQLInputObjectType, config: StrawberryConfig
) -> Convert | None:
    definition = (graphql_type.extensions or {}).get(BACKREF)
    if not isinstance(definition, StrawberryObjectDefinition) or definition.from_input is not None:
        return None
    cls = definition.origin
    # Fields without a default are None unless given, as strawberry does.
    implicit = {
        f.python_name: None
        for f in definition.fields
        if f.default_value is MISSING and f.default_factory is MISSING
    }
    fields: list[tuple[str, str, Convert]] = []
    for field in definition.fields:
        name = config.name_converter.from_field(field)
        graphql_field = graphql_type.fields.get(name)
        if graphql_field is None:
            return None
        convert = converter(graphql_field.type, config)
        if convert is None:
            return None
        fields.append((name, field.python_name, convert))

    def build(value: Any) -> Any:
        if value is None:
            return None
        kwargs = dict(implicit)
        for name, python_name, convert in fields:
            if name in value:
                kwargs[python_name] = convert(value[name])
        return cls(**kwargs)

    return build


def _permissions(field: StrawberryField) -> list[BasePermission] | None:
    """The field's permission checks, or None when it has another kind of extension."""
    checks: list[BasePermission] = []
    for extension in field.extensions:
        if type(extension) is not PermissionExtension:
            return None
        checks.extend(extension.permissions)
    if checks and not all(inspect.iscoroutinefunction(p.has_permission) for p in checks):
        return None  # only async checks are run here
    return checks


def lean_resolver(
    graphql_field: GraphQLField, field: StrawberryField, config: StrawberryConfig
) -> Callable[..., Any] | None:
    """A direct call of the field's resolver, or None where strawberry's own is needed."""
    resolver = field.base_resolver
    if resolver is None or field.is_subscription:
        return None
    if resolver.parent_parameter is not None or resolver.root_parameter is not None:
        return None
    checks = _permissions(field)
    if checks is None or (checks and not field.is_async):
        return None
    arguments: list[tuple[str, str, Convert]] = []
    for argument in field.arguments:
        name = config.name_converter.from_argument(argument)
        graphql_argument = graphql_field.args.get(name)
        convert = converter(graphql_argument.type, config) if graphql_argument else None
        if convert is None:
            return None
        arguments.append((name, argument.python_name, convert))
    function = resolver.wrapped_func
    if not callable(function):
        return None
    takes_self = resolver.self_parameter is not None
    info_name = resolver.info_parameter.name if resolver.info_parameter else None
    make_info = info_maker(config.info_class, field)
    strawberry_resolve = graphql_field.resolve

    def python_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
        return {
            python_name: convert(kwargs[name])
            for name, python_name, convert in arguments
            if name in kwargs
        }

    def call(source: Any, info: Any, converted: dict[str, Any]) -> Any:
        if info_name is not None:
            converted[info_name] = info
        if takes_self:
            return function(source, **converted)
        return function(**converted)

    if not checks:

        def resolve(source: Any, raw_info: GraphQLResolveInfo[Any], **kwargs: Any) -> Any:
            info = make_info(_raw_info=raw_info)
            return call(source, info, python_kwargs(kwargs) if kwargs else {})

        return resolve

    async def resolve_checked(source: Any, raw_info: GraphQLResolveInfo[Any], **kwargs: Any) -> Any:
        info = make_info(_raw_info=raw_info)
        converted = python_kwargs(kwargs)
        for check in checks:
            if await check.has_permission(source, info, **converted) is not True:
                assert strawberry_resolve is not None
                return await strawberry_resolve(source, raw_info, **kwargs)
        result = call(source, info, converted)
        return await result if inspect.isawaitable(result) else result

    return resolve_checked


def strawberry_fields(
    schema: strawberry.Schema,
) -> Iterator[tuple[GraphQLObjectType, str, GraphQLField, StrawberryField]]:
    """Every field of the schema's object types (not introspection's) that strawberry made."""
    for graphql_type in graphql_schema(schema).type_map.values():
        if not isinstance(graphql_type, GraphQLObjectType) or graphql_type.name.startswith("__"):
            continue
        for name, graphql_field in graphql_type.fields.items():
            field = (graphql_field.extensions or {}).get(BACKREF)
            if isinstance(field, StrawberryField):
                yield graphql_type, name, graphql_field, field


def install(schema: strawberry.Schema) -> int:
    """Give every field that fits a lean resolver; returns how many fields got one.

    None with exception handlers: strawberry wraps resolvers with them, a direct call would not.
    """
    count = 0
    if schema.exception_handlers:
        return count
    for graphql_type, _, graphql_field, field in strawberry_fields(schema):
        if graphql_type.name == "Subscription":
            continue
        resolve = lean_resolver(graphql_field, field, schema.config)
        if resolve is not None:
            graphql_field.resolve = resolve
            count += 1
    return count
