"""`reproduce --set FIELD=VALUE` and `--config FILE.yaml`: change any field of a run's config without editing code.

Fields are the preset's (`welfare_axis.pipeline.ReproducePreset`: `alphas=-2,0,2`, `extract_n=400`,
`mechanics=none`), a nested dataclass's as `mechanics.n_maze=8`, and training's (`training.config.TrainConfig`)
as `train.lr=1e-4`, `train.maze.n_moves=7`. A YAML file holds the same keys, flat or nested
(`train: {lr: 1e-4}`); `--set` wins over the file. Values are converted and checked by the field's type
here, once, for the command line and files alike; a bad key or value is one line naming the fix. The
resolved config goes into the run's run_config.json, and the stage keys hash the fields each stage
uses, so an override re-runs exactly the stages it affects.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from pathlib import Path


def parse_assignments(items: list[str]) -> dict[str, str]:
    """["a=1", "b.c=x,y"] -> {"a": "1", "b.c": "x,y"}."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE, e.g. --set alphas=-2,0,2")
        out[key.strip()] = value.strip()
    return out


def load_config_file(path: str | Path) -> dict:
    """A YAML mapping of overrides, nested mappings flattened to dotted keys."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--config {path}: no such file; pass a YAML file of FIELD: VALUE lines")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"--config {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ValueError(f"--config {path} must hold a mapping of FIELD: VALUE, not a {type(data).__name__}")
    return _flatten(data)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key not in ("estimates",):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def convert(value, hint, key: str):
    """`value` (a string from --set, or a YAML value) as the field's type `hint`; ValueError with one line."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return convert(value, inner[0], key)
    if origin is tuple:
        items = value if isinstance(value, (list, tuple)) else [x for x in str(value).split(",") if x.strip()]
        return tuple(convert(x, args[0], key) for x in items)
    if hint is bool:
        from welfare_axis.options import boolean

        try:
            return boolean(value)
        except argparse.ArgumentTypeError as e:
            raise ValueError(f"{key}: {e}") from None
    if hint in (int, float):
        try:
            number = float(value) if hint is float else int(str(value), 10)
        except ValueError:
            raise ValueError(f"{key}={value!r}: expected {'a number' if hint is float else 'a whole number'}") from None
        if not math.isfinite(number):
            raise ValueError(f"{key}={value!r}: expected a finite number")
        return number
    if hint is str:
        return str(value)
    if dataclasses.is_dataclass(hint):
        raise ValueError(f"{key} is a group of fields; set one of them ({', '.join(f'{key}.{f.name}' for f in dataclasses.fields(hint))}) "
                         f"or {key}=none where the field may be left out")
    raise ValueError(f"{key}: a field of type {hint} cannot be set from the command line")


def _fields(cls) -> dict:
    return typing.get_type_hints(cls)


def _group(hint):
    """The dataclass a field holds (`MechanicsSizes` of `MechanicsSizes | None`), or None for a plain field."""
    return next((a for a in (typing.get_args(hint) or (hint,)) if dataclasses.is_dataclass(a)), None)


def apply_overrides(preset, overrides: dict) -> tuple[object, dict]:
    """(the preset with `overrides` applied, training overrides for `config_from_preset`). Every key and value is
    checked before anything changes."""
    from training.config import TrainConfig

    from envs import MazeConfig

    top, nested, train = {}, {}, {}
    hints = _fields(type(preset))
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if head == "train":
            field, _, sub = rest.partition(".")
            if field == "maze" and sub:
                maze_hints = _fields(MazeConfig)
                if sub not in maze_hints:
                    raise ValueError(f"unknown field train.maze.{sub}; use one of {', '.join('train.maze.' + f for f in maze_hints)}")
                train.setdefault("maze", {})[sub] = convert(value, maze_hints[sub], key)
                continue
            if field in ("model", "seed", "device", "dtype"):
                raise ValueError(f"{key} is reproduce's own flag: use --{field} instead")
            train_hints = _fields(TrainConfig)
            if field not in train_hints or field == "maze" or sub:
                raise ValueError(f"unknown field {key}; training fields are train.<TrainConfig field> "
                                 f"(e.g. train.lr, train.n_steps) or train.maze.<MazeConfig field>")
            train[field] = convert(value, train_hints[field], key)
        elif head not in hints or head == "name":
            raise ValueError(f"unknown field {key!r}; use one of {', '.join(sorted(set(hints) - {'name', 'estimates'}))}, "
                             "a nested field such as mechanics.n_maze, or train.<field>")
        elif rest:
            group = _group(hints[head])
            if group is None or rest not in _fields(group):
                raise ValueError(f"unknown field {key!r}")
            nested.setdefault(head, {})[rest] = convert(value, _fields(group)[rest], key)
        elif head == "estimates":
            raise ValueError("estimates only drive the progress bar's time estimate; they cannot be set")
        else:
            top[head] = convert(value, hints[head], key)
    for head, fields in nested.items():
        base = top.get(head, getattr(preset, head))
        top[head] = dataclasses.replace(_group(hints[head])() if base is None else base, **fields)
    return dataclasses.replace(preset, **top), train  # the preset checks its own values (ReproducePreset.__post_init__)
