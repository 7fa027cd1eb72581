"""Load the config tree from YAML + dotted overrides, and write it back.

Pipeline of ``load_config(path, overrides)``:

1. start from the defaults (``config_to_dict(Config())``),
2. merge the YAML file on top (after recursively merging the files named by its
   ``defaults:`` key; the child wins; mappings merge, lists and scalars replace),
3. apply ``section.key=value`` overrides (values parsed as YAML; keys checked against the
   schema, list items addressed as ``masks.0.num_blocks`` or ``masks[0].num_blocks``),
4. build the dataclasses, type-checking every value against the field's type hint,
5. run the cross-field checks in ``validate.py``.

Steps 3-5 collect all problems of their kind and raise them together in one ConfigError.
"""

from __future__ import annotations

import copy
import functools
import re
import types
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from vjepa_pipeline.config.messages import closest, describe, join_path, quoted, short
from vjepa_pipeline.config.recipes import not_found, resolve_recipe
from vjepa_pipeline.config.schema import Config
from vjepa_pipeline.config.validate import validate_config
from vjepa_pipeline.errors import ConfigError
from vjepa_pipeline.utils.atomic import atomic_path

_INVALID = object()  # returned by the builders after recording a problem
_OVERRIDE_EXAMPLE = "e.g. optim.lr=3e-4, model.pos_embed=sincos or masks.0.num_blocks=4"


# ----------------------------------------------------------------------------- type helpers


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _strip_optional(tp: Any) -> Any:
    """``X | None`` -> ``X`` (only when exactly one non-None alternative remains)."""
    if _is_union(tp):
        options = [a for a in get_args(tp) if a is not type(None)]
        if len(options) == 1:
            return options[0]
    return tp


def _type_name(tp: Any) -> str:
    """Human-readable type for messages: ``int or null``, ``list of 2 floats`` ..."""
    if _is_union(tp):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in get_args(tp))
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        return "one of " + quoted(args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}"
        return f"list of {len(args)} {_type_name(args[0])}s"
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if is_dataclass(tp):
        return f"mapping ({tp.__name__})"
    return getattr(tp, "__name__", str(tp))


# ----------------------------------------------------------------------------- building


def _build(value: Any, tp: Any, path: str, errors: list[str]) -> Any:
    """Convert a YAML-loaded value to ``tp``; on a mismatch record a problem, return _INVALID."""
    if _is_union(tp):
        options = [a for a in get_args(tp) if a is not type(None)]
        if value is None and len(options) < len(get_args(tp)):
            return None
        if len(options) == 1:
            return _build(value, options[0], path, errors)
        for option in options:  # general unions: the first alternative that fits wins
            out = _build(value, option, path, trial := [])
            if not trial:
                return out
        return _fail(errors, f"{path}: expected {_type_name(tp)}, got {describe(value)}")

    origin, args = get_origin(tp), get_args(tp)
    if is_dataclass(tp):
        return _build_dataclass(value, tp, path, errors)
    if value is None:
        return _fail(errors, f"{path}: expected {_type_name(tp)}, got null")
    if origin is Literal:
        return _build_literal(value, args, path, errors)
    if origin in (tuple, list):
        return _build_sequence(value, tp, path, errors)
    if tp is bool:
        if isinstance(value, bool):
            return value
        return _fail(errors, f"{path}: expected bool (true/false), got {describe(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        return _fail(errors, f"{path}: expected int, got {describe(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads `3e-4` (no dot) as a string
            try:
                return float(value.strip())
            except ValueError:
                pass
        return _fail(errors, f"{path}: expected float, got {describe(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        return _fail(errors, f"{path}: expected str, got {describe(value)}")
    raise TypeError(f"{path}: unsupported config field type {tp!r}")  # a bug in schema.py


def _fail(errors: list[str], message: str) -> Any:
    errors.append(message)
    return _INVALID


def _build_literal(value: Any, choices: tuple, path: str, errors: list[str]) -> Any:
    for choice in choices:
        if value == choice and type(value) is type(choice):
            return choice
    # `precision: 32` arrives as an int; accept it when its text is a valid choice.
    if isinstance(value, (int, float)) and not isinstance(value, bool) and str(value) in choices:
        return str(value)
    hint = closest(str(value), [c for c in choices if isinstance(c, str)])
    suggestion = f" (did you mean {hint!r}?)" if hint else ""
    return _fail(errors, f"{path}: must be one of {quoted(choices)}; got {short(value)}{suggestion}")


def _build_sequence(value: Any, tp: Any, path: str, errors: list[str]) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if not isinstance(value, (list, tuple)):
        return _fail(errors, f"{path}: expected a {_type_name(tp)}, got {describe(value)}")
    if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
        if len(value) != len(args):
            return _fail(errors, f"{path}: expected {len(args)} values, got {len(value)}")
        item_types = list(args)
    else:
        item_types = [args[0]] * len(value)
    items = [
        _build(v, t, join_path(path, i), errors)
        for i, (v, t) in enumerate(zip(value, item_types, strict=True))
    ]
    if any(item is _INVALID for item in items):
        return _INVALID
    return tuple(items) if origin is tuple else items


def _build_dataclass(value: Any, cls: type, path: str, errors: list[str]) -> Any:
    if value is None:  # an empty YAML section (`launch:`) means "all defaults"
        value = {}
    if not isinstance(value, Mapping):
        where = path or "config"
        return _fail(
            errors, f"{where}: expected a mapping of {cls.__name__} keys, got {describe(value)}"
        )
    hints = _hints(cls)
    ok = True
    for key in value:
        if key not in hints:
            errors.append(_unknown_key_message(path, key, cls))
            ok = False
    kwargs = {}
    for f in fields(cls):
        child = join_path(path, f.name)
        if f.name in value:
            out = _build(value[f.name], hints[f.name], child, errors)
            if out is _INVALID:
                ok = False
            else:
                kwargs[f.name] = out
        elif f.default is MISSING and f.default_factory is MISSING:
            errors.append(f"{child}: required key is missing")
            ok = False
    return cls(**kwargs) if ok else _INVALID


# ----------------------------------------------------------------------------- unknown keys


@functools.cache
def _all_paths(cls: type = Config, prefix: str = "") -> tuple[str, ...]:
    """Dotted paths of every field reachable through nested dataclasses (not through lists)."""
    out: list[str] = []
    for name, tp in _hints(cls).items():
        path = join_path(prefix, name)
        out.append(path)
        if is_dataclass(tp):
            out.extend(_all_paths(tp, path))
    return tuple(out)


def _unknown_key_message(path: str, key: Any, cls: type) -> str:
    """``optim.lrr: unknown key; did you mean 'optim.lr'?`` (or the list of valid keys)."""
    key = str(key) if isinstance(key, str) else short(key)
    key = key if len(key) <= 80 else key[:77] + "..."
    full = join_path(path, key)
    names = list(_hints(cls))
    hint = closest(key, names)
    if hint:
        return f"{full}: unknown key; did you mean {join_path(path, hint)!r}?"
    # The key may live in another section (`model.lr` -> `optim.lr`).
    paths = _all_paths()
    leaves = {p.rsplit(".", 1)[-1]: p for p in reversed(paths)}
    near = closest(key, leaves, cutoff=0.8)
    if near:
        return f"{full}: unknown key; did you mean {leaves[near]!r}?"
    return f"{full}: unknown key; valid keys here: {', '.join(names)}"


# ----------------------------------------------------------------------------- YAML files


def _merge(base: Mapping, over: Mapping) -> dict:
    """Recursive merge, ``over`` wins; mappings merge, anything else replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        elif value is None and isinstance(out.get(key), Mapping):
            continue  # an empty section changes nothing
        else:
            out[key] = copy.deepcopy(value)
    return out


# A recipe is a few kilobytes and a few hundred values. Anything far beyond is not a recipe: a
# device (/dev/zero), a huge file, or an alias bomb (YAML anchors re-used level after level:
# "billion laughs"), whose expansion would never fit in memory.
MAX_YAML_BYTES = 1 << 20
MAX_YAML_VALUES = 100_000


def read_text_file(path: str | Path, what: str = "config file") -> str:
    """The UTF-8 text of a small file (a recipe, a suite, a run's config.yaml), or ConfigError in
    one line: missing, a folder, a device or socket, larger than MAX_YAML_BYTES, or not UTF-8.
    Pipes are read (``--config <(...)``), at most MAX_YAML_BYTES of them."""
    import os
    import stat

    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise ConfigError(f"cannot read {what} {path}: it is a folder, not a YAML file")
    if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
        raise ConfigError(f"cannot read {what} {path}: not a regular file (a device or a socket)")
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_YAML_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_YAML_BYTES:
        raise ConfigError(f"cannot read {what} {path}: larger than {MAX_YAML_BYTES >> 20} MiB, not a YAML recipe")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                          "save the file as UTF-8") from None


def _yaml_children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


class _YAMLProblem(Exception):
    """What is wrong with a YAML text (``problem``), and where (``mark``: line / column, or None)."""

    def __init__(self, problem: str, mark: Any = None):
        super().__init__(problem)
        self.problem, self.mark = problem, mark

    def at(self, where: str) -> str:
        return f"{where}, line {self.mark.line + 1}, column {self.mark.column + 1}" if self.mark else where


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a node graph whose aliases expand to more than MAX_YAML_VALUES values, or refer to
    themselves; linear in the size of the graph (each node is counted once, shared or not)."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in _yaml_children(node))
            if sizes[key] > MAX_YAML_VALUES:
                raise _YAMLProblem(f"aliases expand to more than {MAX_YAML_VALUES} values (an alias bomb?); "
                                   "refused before building them", node.start_mark)
            continue
        if key in sizes:
            continue
        on_path.add(key)
        stack.append((node, True))
        for child in _yaml_children(node):
            if id(child) in on_path:
                raise _YAMLProblem("an alias refers to a value that contains it (a recursive value)", child.start_mark)
            if id(child) not in sizes:
                stack.append((child, False))


def _load_bounded(text: str) -> Any:
    """``yaml.safe_load(text)``, bounded: the alias expansion is checked on the node graph before
    any Python object is built. Raises _YAMLProblem."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise _YAMLProblem(problem, getattr(exc, "problem_mark", None)) from None
    except RecursionError:
        raise _YAMLProblem("nested too deeply") from None
    except ValueError as exc:  # e.g. an integer beyond Python's int digit limit
        text = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise _YAMLProblem(text if len(text) <= 120 else text[:117] + "...") from None
    finally:
        loader.dispose()


def parse_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load(text)`` with bounded alias expansion (an alias bomb is refused before it is
    built). Errors are one-line ConfigErrors: ``<where>, line L, column C: invalid YAML: ...``."""
    try:
        return _load_bounded(text)
    except _YAMLProblem as exc:
        raise ConfigError(f"{exc.at(where)}: invalid YAML: {exc.problem}") from None


def read_yaml_file(path: str | Path, what: str = "config file") -> Any:
    """The YAML document of a small file: :func:`read_text_file` then :func:`parse_yaml`."""
    return parse_yaml(read_text_file(path, what), str(path))


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """Read one recipe and the ``defaults:`` files it inherits from, merged."""
    if path.resolve() in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path.resolve()))
        raise ConfigError(f"defaults: inheritance cycle: {cycle}")
    data = read_yaml_file(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections, got {describe(data)}")

    parents = data.pop("defaults", None)
    if parents is None:
        return data
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise ConfigError(
            f"{path}: defaults: expected a file name or a list of them, got {describe(parents)}"
        )
    merged: dict = {}
    for parent in parents:  # relative to the including file; later parents win
        merged = _merge(merged, _read_yaml(path.parent / parent, (*chain, path.resolve())))
    return _merge(merged, data)


# ----------------------------------------------------------------------------- overrides


def _parse_override(text: str) -> tuple[list[str], Any]:
    key, sep, raw = text.partition("=")
    key = key.strip()
    parts = re.sub(r"\[(\d+)\]", r".\1", key).split(".")
    if not sep or not key or "" in parts:
        raise ConfigError(f"bad override {text!r}: expected section.key=value, {_OVERRIDE_EXAMPLE}")
    try:
        value = _load_bounded(raw)
    except _YAMLProblem as exc:
        raise ConfigError(
            f"{key}: value {short(raw)} of override {short(text)} is not valid YAML: {exc.problem}"
        ) from None
    return parts, value


def _apply_override(raw: dict, parts: list[str], value: Any) -> str | None:
    """Set one dotted key in the raw dict, walking the schema; return a problem or None."""
    tp: Any = Config
    node: Any = raw
    path = ""
    for i, part in enumerate(parts):
        tp = _strip_optional(tp)
        origin = get_origin(tp)
        if is_dataclass(tp):
            if part not in _hints(tp):
                return _unknown_key_message(path, part, tp)
            if not isinstance(node, dict):
                return f"{path}: cannot set {part!r}: value is {describe(node)}, not a mapping"
            key: str | int = part
            child_path, child_tp = join_path(path, part), _hints(tp)[part]
        elif origin in (list, tuple):
            if not part.isdigit():
                return f"{path}: expected a list index after {path!r}, got {part!r}"
            if not isinstance(node, list):
                return f"{path}: cannot index: value is {describe(node)}, not a list"
            key = int(part)
            child_path = join_path(path, key)
            args = get_args(tp)
            fixed = origin is tuple and args[-1] is not Ellipsis
            child_tp = args[min(key, len(args) - 1)] if fixed else args[0]
            if key == len(node) and origin is list:  # one past the end appends a new item
                node.append({} if is_dataclass(_strip_optional(child_tp)) else None)
            elif key >= len(node):
                return f"{child_path}: index out of range, {path} has {len(node)} items"
        else:
            rest = ".".join(parts[i:])
            return f"{path}: is a {_type_name(tp)} value, not a section; cannot set {rest!r}"

        if i == len(parts) - 1:  # the leaf: set (a mapping value merges into a mapping)
            current = node[key] if isinstance(node, list) else node.get(key)
            if isinstance(value, Mapping) and isinstance(current, Mapping):
                node[key] = _merge(current, value)
            else:
                node[key] = copy.deepcopy(value)
            return None
        if isinstance(node, dict) and node.get(key) is None:
            if is_dataclass(_strip_optional(child_tp)):
                node[key] = {}
        node, tp, path = node[key], child_tp, child_path
    return None


def _apply_overrides_to_dict(raw: dict, overrides: Sequence[str]) -> None:
    if isinstance(overrides, str):
        raise TypeError("overrides must be a sequence of 'key=value' strings, not one string")
    problems = []
    for text in overrides:
        parts, value = _parse_override(text)
        problem = _apply_override(raw, parts, value)
        if problem:
            problems.append(f"{problem} (in override {text!r})")
    if problems:
        raise ConfigError(problems)


# ----------------------------------------------------------------------------- public API


def config_from_dict(
    data: Mapping[str, Any], *, validate: bool = True, source: str | None = None
) -> Config:
    """Build a Config from a (possibly partial) plain dict; missing keys take their defaults.

    Raises ConfigError listing every type problem, then (if ``validate``) every cross-field one.
    ``source`` (e.g. the YAML path) prefixes the error message.
    """
    errors: list[str] = []
    cfg = _build_dataclass(data, Config, "", errors)
    if errors:
        raise ConfigError(errors, source)
    if validate:
        validate_config(cfg, source)
    return cfg


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> Config:
    """Load a recipe (None = built-in defaults), apply ``section.key=value`` overrides, validate.

    ``path`` is a YAML file or, when no such file exists, the name of a packaged recipe
    (``debug``, ``pretrain/debug``, ``configs/pretrain/debug.yaml``; see ``recipes.py``)."""
    raw = config_to_dict(Config())
    source = None
    if path is not None:
        kind = "world_model" if Path(path).as_posix().startswith(("world_model/", "configs/world_model/")) else "pretrain"
        recipe = resolve_recipe(path, kind)
        if recipe is None:
            raise ConfigError(f"config file not found: {path}, and {not_found(path, kind)}")
        raw = _merge(raw, _read_yaml(recipe))
        source = str(path) if recipe == Path(path) else str(recipe)
    _apply_overrides_to_dict(raw, overrides)
    if source and overrides:
        source += " with overrides"
    return config_from_dict(raw, source=source)


def read_run_config(path: str | Path) -> Config:
    """The config a run directory saved (``config.yaml``), built and type-checked like a recipe
    (not re-validated: it was valid when it was written). A file that cannot be read or built is a
    ConfigError that names it and says what to do."""
    where = f"{path} (this run's saved config: restore it, or use another name= for a new run)"
    try:
        data = read_yaml_file(path, "run config")
    except ConfigError as exc:
        raise ConfigError(f"{exc} (this run's saved config: restore it, or use another name= for a new run)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping of config sections, got {describe(data)}", where)
    return config_from_dict(data, validate=False, source=where)


def apply_overrides(cfg: Config, overrides: Sequence[str]) -> Config:
    """A new, validated Config with ``section.key=value`` overrides applied (cfg is unchanged)."""
    raw = config_to_dict(cfg)
    _apply_overrides_to_dict(raw, overrides)
    return config_from_dict(raw)


def config_to_dict(cfg: Any) -> Any:
    """Plain YAML-safe structure (dicts, lists, scalars) of a Config or any part of one."""
    if is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [config_to_dict(v) for v in cfg]
    if isinstance(cfg, Mapping):
        return {str(k): config_to_dict(v) for k, v in cfg.items()}
    return cfg


class _Dumper(yaml.SafeDumper):
    """Safe dumper that writes short scalar lists inline: ``betas: [0.9, 0.999]``."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(not isinstance(v, (list, dict)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def dump_config(cfg: Config, path: str | Path) -> Path:
    """Write the resolved config as YAML, atomically (temp file in the same dir + os.replace)."""
    path = Path(path)
    text = yaml.dump(config_to_dict(cfg), Dumper=_Dumper, sort_keys=False)
    with atomic_path(path) as tmp:  # mode 0666 less the umask, like any new file
        tmp.write_text(text)
    return path


def build_dataclass(data: Mapping[str, Any], cls: type, *, source: str | None = None) -> Any:
    """Build any dataclass tree (e.g. an eval suite) from a plain dict with the same typing,
    unknown-key suggestions and error format as the main config."""
    errors: list[str] = []
    obj = _build_dataclass(data, cls, "", errors)
    if errors:
        raise ConfigError(errors, source)
    return obj
