"""Cluster profiles: site settings for ``vjepa launch --cluster NAME``.

A profile is a YAML file of ``launch.*`` keys (partition, account, qos, constraint, default
resources, ``setup`` lines such as ``module load cuda``), plus an optional ``description``.
``--cluster NAME`` reads ``slurm/profiles/NAME.yaml`` (looked up in ``$VJEPA_SLURM_PROFILES``, then
``./slurm/profiles``, then the repository checkout); ``--cluster path/to/file.yaml`` reads a file.

Precedence, lowest first: schema defaults < profile < recipe < ``key=value`` overrides < flags.
The profile fills the ``launch.*`` keys the recipe and overrides leave at their defaults, so a
recipe's job shape (nodes, GPUs, time) wins over a profile's site defaults.
"""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path

import yaml

from ..config import ConfigError, LaunchConfig, apply_overrides, config_to_dict
from ..config.loader import build_dataclass, read_yaml_file
from ..config.messages import closest

REPO_PROFILES = Path(__file__).resolve().parents[2] / "slurm" / "profiles"


def profile_dirs() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get("VJEPA_SLURM_PROFILES", "").split(os.pathsep) if p]
    return [*dirs, Path("slurm/profiles"), REPO_PROFILES]


def available_profiles() -> list[str]:
    names = set()
    for d in profile_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def find_profile(name: str) -> Path:
    if name.endswith((".yaml", ".yml")) or os.sep in name:
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"--cluster: profile file not found: {path}")
        return path
    for d in profile_dirs():
        path = d / f"{name}.yaml"
        if path.is_file():
            return path
    known = available_profiles()
    hint = closest(name, known)
    raise ConfigError(f"--cluster: unknown cluster profile {name!r}"
                      + (f"; did you mean {hint!r}?" if hint else "")
                      + f" (known: {', '.join(known) or 'none'}; or pass a YAML file)")


def load_profile(name: str) -> dict:
    """The profile's ``launch.*`` values as a plain dict (validated against LaunchConfig)."""
    path = find_profile(name)
    data = read_yaml_file(path, "cluster profile") or {}  # bounded: alias bombs, non-UTF-8, devices
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a cluster profile is a mapping of launch.* keys")
    data.pop("description", None)
    data = data.get("launch", data)  # both `launch: {...}` and top-level keys are accepted
    data.pop("cluster", None)
    build_dataclass(data, LaunchConfig, source=str(path))  # unknown keys / wrong types fail here
    return {"cluster": name, **data}


def apply_profile(cfg, name: str | None):
    """A new Config whose ``launch.*`` keys left at their defaults take the profile's values."""
    if not name:
        return cfg
    profile = load_profile(name)
    defaults = config_to_dict(LaunchConfig())
    current = config_to_dict(cfg.launch)
    overrides = []
    for f in fields(LaunchConfig):
        if f.name in profile and (current[f.name] == defaults[f.name] or f.name == "cluster"):
            overrides.append(f"launch.{f.name}={_yaml_value(profile[f.name])}")
    return apply_overrides(cfg, overrides)


def _yaml_value(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()
