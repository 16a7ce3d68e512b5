"""A config field's doc and its value: the attribute docstrings that are its `--help`, and the one conversion of a
raw value (a command-line string, a YAML or JSON value) to the field's type, for `--set`, config files and the
demo's HTTP API alike."""

from __future__ import annotations

import dataclasses
import math
import types
import typing

TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def field_docs(cls) -> dict[str, str]:
    """{field name: its attribute docstring} of a dataclass, whitespace collapsed.

    The docstrings are read from the source, as tyro and CleanRL do, so the doc lives on the
    field and cannot drift from a separate table.
    """
    import ast
    import inspect
    import textwrap

    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    docs = {}
    for stmt, nxt in zip(body, body[1:]):
        if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
            docs[stmt.target.id] = " ".join(nxt.value.value.split())
    return docs


def convert(value, hint, key: str):
    """`value` as the type `hint` (int, float, bool, str, tuple[T, ...], Optional[T]); ValueError with one line naming `key`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            if type(None) in args:
                return None
        return convert(value, next(a for a in args if a is not type(None)), key)
    if origin is tuple:
        items = value if isinstance(value, (list, tuple)) else [x for x in str(value).split(",") if x.strip()]
        return tuple(convert(x, args[0], key) for x in items)
    if hint is bool:
        if isinstance(value, bool) or str(value).lower() in TRUE + FALSE:
            return value if isinstance(value, bool) else str(value).lower() in TRUE
        raise ValueError(f"{key} must be true or false, got {value!r}")
    if hint in (int, float):
        return _number(value, hint, key)
    if hint is str:
        return str(value)
    if dataclasses.is_dataclass(hint):
        raise ValueError(f"{key} is a group of fields; set one of them ({', '.join(f'{key}.{f.name}' for f in dataclasses.fields(hint))}) "
                         f"or {key}=none where the field may be left out")
    raise ValueError(f"{key}: a field of type {hint} cannot be set from the command line")


def _number(value, hint, key: str):
    kind = "a number" if hint is float else "a whole number"
    if isinstance(value, bool):  # a YAML or JSON true is not 1
        raise ValueError(f"{key} must be {kind}, got {value!r}")
    if hint is int and isinstance(value, (int, str)) and str(value).strip().lstrip("+-").isdigit():
        return int(value)  # exactly, however large
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be {kind}, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{key} must be a finite number, got {value!r}")
    if hint is int:
        if not number.is_integer():
            raise ValueError(f"{key} must be a whole number, got {value!r}")
        return int(number)
    return number
