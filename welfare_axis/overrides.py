"""`reproduce --set FIELD=VALUE` and `--config FILE.yaml`: change any field of a run's config without editing code.

Keys are paths in the study config (`welfare_axis.study_config.StudyConfig`): a stage group's field as
`steer.alphas=-2,0,2`, `extract.n=400`, `mechanics.n_maze=8`, a group that may be left out as `mechanics=none`,
training's hyperparameters (`training.config.TrainConfig`) as `train.lr=1e-4` and the maze's
(`envs.MazeConfig`) as `maze.n_moves=7`. A YAML file holds the same keys, flat or nested
(`steer: {alphas: [-2, 0, 2]}`); `--set` wins over the file. Presets are overrides in the same keys. Values are
converted and checked by the field's type here, once, for presets, the command line, files and the demo's HTTP
API alike; a bad key or value is one line naming the fix. The resolved config goes into the run's
run_config.json, and the stage keys hash the fields each stage uses, so an override re-runs exactly the
stages it affects.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

from core.fields import convert


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
        if isinstance(v, dict) and key != "estimates":
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _fields(cls) -> dict:
    return typing.get_type_hints(cls)


def _group(hint):
    """The dataclass a field holds (`MechanicsSizes` of `MechanicsSizes | None`), or None for a plain field."""
    return next((a for a in (typing.get_args(hint) or (hint,)) if dataclasses.is_dataclass(a)), None)


def field_paths(cls=None) -> dict[str, tuple]:
    """{dotted key: (type hint, doc)} of every settable field of the study config (train.* and maze.* included)."""
    from training.config import TrainConfig

    from core.fields import field_docs
    from envs import MazeConfig
    from welfare_axis.study_config import StudyConfig

    out = {}
    cls = cls or StudyConfig
    docs = field_docs(cls)
    for name, hint in _fields(cls).items():
        if name in ("name", "estimates"):
            continue
        group = _group(hint)
        if group is None:
            out[name] = (hint, docs.get(name, ""))
        else:
            out.update({f"{name}.{k}": v for k, v in field_paths(group).items()})
    if cls is StudyConfig:
        train_docs, maze_docs = field_docs(TrainConfig), field_docs(MazeConfig)
        out.update({f"train.{k}": (h, train_docs.get(k, "")) for k, h in _fields(TrainConfig).items() if k not in _OWN_FLAGS + ("maze",)})
        out.update({f"maze.{k}": (h, maze_docs.get(k, "")) for k, h in _fields(MazeConfig).items()})
    return out


_OWN_FLAGS = ("model", "seed", "device", "dtype")  # training fields reproduce sets from its own flags


def _unknown(key: str, paths: dict) -> ValueError:
    leaf = key.rpartition(".")[2]
    near = [k for k in paths if k.rpartition(".")[2] == leaf] or [k for k in paths if k.startswith(key.partition(".")[0] + ".")][:6]
    hint = f"; did you mean {' or '.join(near)}?" if near else "; `welfare-axis reproduce --fields` lists every field"
    return ValueError(f"unknown field {key!r}{hint}")


def apply_overrides(config, overrides: dict, presets: bool = False) -> tuple[object, dict]:
    """(the study config with `overrides` applied, training overrides for `config_from_preset`). Every key and value is
    checked before anything changes; each group checks its own values when it is rebuilt. `presets`: the keys come
    from a preset in code, which may also set `estimates` and give groups as objects."""
    top, nested, train = {}, {}, {}
    hints = _fields(type(config))
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if head in ("train", "maze"):
            _train_override(key, head, rest, value, train)
        elif head == "estimates" and presets:
            top[head] = dict(value)
        elif head in ("name", "estimates") and not presets:
            raise ValueError(f"{key} cannot be set: " + ("estimates only drive the progress bar's time estimate" if head == "estimates"
                                                         else "it names the preset; pass --preset"))
        elif head not in hints:
            raise _unknown(key, field_paths())
        elif rest:
            group = _group(hints[head])
            if group is None or rest not in _fields(group):
                raise _unknown(key, field_paths())
            nested.setdefault(head, {})[rest] = convert(value, _fields(group)[rest], key)
        elif presets and dataclasses.is_dataclass(value):
            top[head] = value
        else:
            top[head] = convert(value, hints[head], key)
    for head, fields in nested.items():
        base = top.get(head, getattr(config, head))
        top[head] = dataclasses.replace(_group(hints[head])() if base is None else base, **fields)
    return dataclasses.replace(config, **top), train


def _train_override(key: str, head: str, rest: str, value, train: dict) -> None:
    """`train.<TrainConfig field>` or `maze.<MazeConfig field>`, converted into `train` (config_from_preset's keywords)."""
    from training.config import TrainConfig

    from envs import MazeConfig

    cls = MazeConfig if head == "maze" else TrainConfig
    hints = _fields(cls)
    if head == "train" and rest.partition(".")[0] == "maze":
        raise ValueError(f"{key}: the maze is one config for every stage; set maze.{rest.partition('.')[2] or '<field>'} instead")
    if head == "train" and rest in _OWN_FLAGS:
        raise ValueError(f"{key} is reproduce's own flag: use --{rest} instead")
    if rest not in hints:
        raise _unknown(key, field_paths())
    converted = convert(value, hints[rest], key)
    if head == "maze":
        train.setdefault("maze", {})[rest] = converted
    else:
        train[rest] = converted
