"""Turning nested YAML mappings into frozen, typed config objects.

A config class is a frozen dataclass whose field annotations say what each key may hold.
:func:`build` walks a mapping against such a class and reports every problem at once in one
:class:`~utils.errors.ConfigurationError`, one line per problem, each naming the file, the
full dotted key and what was expected. Classes may add cross-field rules in a ``check()``
method that yields ``(relative_key, message)`` pairs; it runs when all of the class's own
fields are valid.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any, Literal, Union

from utils.errors import ConfigurationError

Problem = tuple[str, str]


def join_key(prefix: str, key: str) -> str:
    """``join_key('model', 's3d') == 'model.s3d'``; an empty prefix gives the key itself."""
    return f"{prefix}.{key}" if prefix else key


def fail(source: str, key: str, message: str) -> ConfigurationError:
    """The one way config problems are worded: ``file: key: message``."""
    return ConfigurationError(f"{source}: {key or '<top level>'}: {message}")


class ConfigProblems(ConfigurationError):
    """Several problems of one config, one ``file: key: message`` line each."""

    def __init__(self, problems: list[ConfigurationError]) -> None:
        self.problems = [
            line
            for problem in problems
            for line in (problem.problems if isinstance(problem, ConfigProblems) else [problem])
        ]
        super().__init__("\n".join(str(p) for p in self.problems))


def build(cls: type, data: Any, source: str, prefix: str = "") -> Any:
    """Build an instance of the dataclass ``cls`` from ``data`` (a mapping).

    Raises one ConfigurationError listing every unknown key, missing required key, wrong
    type and problem the classes' own ``check()`` methods report.
    """
    return _convert(data, cls, source, prefix)


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if hint is type(None):
        return "null"
    if hint is Any:
        return "any value"
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}"
        return f"a list of {len(args)} values ({', '.join(_type_name(a) for a in args)})"
    if origin is dict:
        return f"a mapping of {_type_name(typing.get_args(hint)[1])}"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def _convert(value: Any, hint: Any, source: str, key: str) -> Any:
    """Check ``value`` against the type ``hint`` and convert it (lists become tuples)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        return _build_dataclass(hint, value, source, key)
    if origin in (Union, types.UnionType):
        return _convert_union(value, hint, source, key)
    if origin is Literal:
        if value in typing.get_args(hint) and not isinstance(value, bool):
            return value
        raise fail(source, key, f"expected {_type_name(hint)}, got {value!r}")
    if origin is tuple:
        return _convert_tuple(value, hint, source, key)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise fail(source, key, f"expected {_type_name(hint)}, got {value!r}")
        value_hint = typing.get_args(hint)[1]
        return {
            str(k): _convert(v, value_hint, source, join_key(key, str(k))) for k, v in value.items()
        }
    return _convert_scalar(value, hint, source, key)


def _convert_scalar(value: Any, hint: Any, source: str, key: str) -> Any:
    if hint is type(None):
        if value is None:
            return None
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # YAML 1.1 reads "1e-3" (no dot) as a string: accept numbers written that way.
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"unsupported config type {hint!r} at {key}")
    raise fail(source, key, f"expected {_type_name(hint)}, got {value!r}")


def _convert_union(value: Any, hint: Any, source: str, key: str) -> Any:
    options = typing.get_args(hint)
    if value is None:
        if type(None) in options:
            return None
        raise fail(source, key, f"expected {_type_name(hint)}, got null")
    errors = []
    for option in options:
        if option is type(None):
            continue
        try:
            return _convert(value, option, source, key)
        except ConfigurationError as error:
            errors.append(error)
    # A single non-null option gives the more precise nested message.
    if len(errors) == 1:
        raise errors[0]
    raise fail(source, key, f"expected {_type_name(hint)}, got {value!r}")


def _convert_tuple(value: Any, hint: Any, source: str, key: str) -> tuple:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple)):
        raise fail(source, key, f"expected {_type_name(hint)}, got {value!r}")
    args = typing.get_args(hint)
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_convert(v, args[0], source, f"{key}[{i}]") for i, v in enumerate(value))
    if len(value) != len(args):
        raise fail(source, key, f"expected {_type_name(hint)}, got {value!r}")
    return tuple(_convert(v, a, source, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))


def _build_dataclass(cls: type, value: Any, source: str, key: str) -> Any:
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise fail(source, key, f"expected a mapping of settings, got {value!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    problems = [
        fail(
            source,
            join_key(key, name),
            f"unknown key; valid keys here are: {', '.join(sorted(fields))}",
        )
        for name in sorted(str(k) for k in value if k not in fields)
    ]
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, field in fields.items():
        field_key = join_key(key, name)
        if name in value:
            try:
                kwargs[name] = _convert(value[name], hints[name], source, field_key)
            except ConfigurationError as error:
                problems.append(error)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            problems.append(
                fail(
                    source, field_key, f"missing required key (expected {_type_name(hints[name])})"
                )
            )
    if problems:  # cross-field rules need every field: they wait until these are fixed
        raise ConfigProblems(problems)
    instance = cls(**kwargs)
    problems = [
        fail(source, join_key(key, relative_key), message)
        for relative_key, message in _problems(instance)
    ]
    if problems:
        raise ConfigProblems(problems)
    return instance


def _problems(instance: Any) -> Iterator[Problem]:
    check = getattr(instance, "check", None)
    if check is not None:
        yield from check()


def set_dotted(data: dict, dotted_key: str, value: Any, source: str) -> None:
    """Set ``data['a']['b']['c'] = value`` for ``dotted_key == 'a.b.c'``, creating mappings."""
    parts = dotted_key.split(".")
    if not all(parts):
        raise fail(
            source, dotted_key, "an override key must be a dotted path like training.batch_size"
        )
    node = data
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise fail(
                source, ".".join(parts[: depth + 1]), "is not a mapping, cannot override inside it"
            )
        node = child
    node[parts[-1]] = value
