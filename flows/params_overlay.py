"""Change params.yaml in place (comments kept): apply a scale profile or key=value overrides.

Every change is validated against the schema before the file is written, so a typo never
reaches a stage.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML

from components.config import Params, ParamsError, parse_params


def _yaml() -> YAML:
    y = YAML()
    y.preserve_quotes = True
    y.width = 100
    # Keep `null` spelled out (ruamel writes an empty value by default).
    y.representer.add_representer(
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    return y


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _set(doc: Any, dotted: str, value: Any) -> Any:
    *parents, leaf = dotted.split(".")
    node = doc
    for key in parents:
        if key not in node:
            raise ParamsError(f"unknown params key {dotted!r} (no section {key!r})")
        node = node[key]
    if leaf not in node:
        raise ParamsError(f"unknown params key {dotted!r}")
    old = node[leaf]
    node[leaf] = value
    return old


def _changed_text(changes: dict[str, Any], path: Path) -> tuple[str, dict, Params]:
    y = _yaml()
    doc = y.load(path.read_text())
    changed = {}
    for key, value in changes.items():
        old = _set(doc, key, value)
        if old != value:
            changed[key] = (old, value)
    buf = io.StringIO()
    y.dump(doc, buf)
    params = parse_params(yaml.safe_load(buf.getvalue()), source=f"{path} with {sorted(changes)}")
    return buf.getvalue(), changed, params


def update_params(changes: dict[str, Any], path: Path) -> dict[str, tuple[Any, Any]]:
    """Set dotted keys to values; returns {key: (old, new)} for the values that changed."""
    text, changed, _ = _changed_text(changes, path)
    path.write_text(text)  # only after the new values validated
    return changed


def profile_changes(profile: str, path: Path) -> dict[str, Any]:
    raw = yaml.safe_load(path.read_text())
    profiles = raw.get("profiles") or {}
    if profile not in profiles:
        raise ParamsError(
            f"profile {profile!r} is not defined under `profiles:` in {path}; "
            f"defined: {sorted(profiles)}"
        )
    return {**_flatten(profiles[profile] or {}), "profile": profile}


def preview_params(
    path: Path, profile: str | None = None, overrides: dict[str, str] | None = None
) -> Params:
    """The params a profile and overrides would give, validated, without writing the file."""
    changes = profile_changes(profile, path) if profile else {}
    changes.update({k: yaml.safe_load(v) for k, v in (overrides or {}).items()})
    return _changed_text(changes, path)[2]


def set_params(overrides: dict[str, str], path: Path) -> dict[str, tuple[Any, Any]]:
    """`key=value` strings from a CLI or flow parameter; values are parsed as YAML scalars."""
    return update_params({k: yaml.safe_load(v) for k, v in overrides.items()}, path)


def apply_profile(profile: str, path: Path) -> dict[str, tuple[Any, Any]]:
    return update_params(profile_changes(profile, path), path)
