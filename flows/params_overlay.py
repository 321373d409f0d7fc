"""Change params.yaml in place (comments kept): apply a scale profile or key=value overrides.

Every change is validated against the schema before the file is written, so a typo never
reaches a stage.

Profiles: the values written in params.yaml's sections are the `demo` profile, the base. Every
other profile lists only the keys it changes (`profiles.smoke`, `profiles.cluster`). Applying
one records the base values it replaces under `profiles.demo`; applying `demo` puts them back
and drops that record. So each value is declared once, switching profiles round-trips exactly,
and an edit to a key no profile changes is never touched.
"""

from __future__ import annotations

import copy
import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML

from components.config import Params, ParamsError, flatten, parse_params

log = logging.getLogger(__name__)

# The profile whose values are params.yaml's own sections.
BASE_PROFILE = "demo"
_RECORD_COMMENT = "# written by `llmops params apply`: the base values the applied profile replaced"


def _yaml() -> YAML:
    y = YAML()
    y.preserve_quotes = True
    y.width = 100
    # Keep `null` spelled out (ruamel writes an empty value by default).
    y.representer.add_representer(
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    return y


def _parent(doc: Any, dotted: str) -> tuple[Any, str]:
    *parents, leaf = dotted.split(".")
    node = doc
    for key in parents:
        if not isinstance(node, dict) or key not in node:
            raise ParamsError(f"unknown params key {dotted!r} (no section {key!r})")
        node = node[key]
    if not isinstance(node, dict) or leaf not in node:
        raise ParamsError(f"unknown params key {dotted!r}")
    return node, leaf


def _get(doc: Any, dotted: str) -> Any:
    node, leaf = _parent(doc, dotted)
    return node[leaf]


def _set(doc: Any, dotted: str, value: Any) -> None:
    node, leaf = _parent(doc, dotted)
    # A copy: one ruamel node in two places of the document would be written as a YAML alias.
    node[leaf] = copy.deepcopy(value)


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    """{"a.b": 1} -> {"a": {"b": 1}}: how a profile is written in params.yaml."""
    out: dict[str, Any] = {}
    for dotted, value in flat.items():
        *parents, leaf = dotted.split(".")
        node = out
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = copy.deepcopy(value)
    return out


def _live_values(text: str) -> dict[str, Any]:
    """The values the stages read (everything but `profiles`), flattened."""
    raw = yaml.safe_load(text) or {}
    raw.pop("profiles", None)
    return flatten(raw)


def _edit(path: Path, change: Callable[[Any], None]) -> tuple[str, dict, Params]:
    """Apply `change` to the document; returns the new text, {key: (old, new)} and the params,
    validated. Nothing is written."""
    y = _yaml()
    before = path.read_text()
    doc = y.load(before)
    change(doc)
    buf = io.StringIO()
    y.dump(doc, buf)
    params = parse_params(yaml.safe_load(buf.getvalue()), source=f"{path} as changed")
    old, new = _live_values(before), _live_values(buf.getvalue())
    changed = {k: (old.get(k), new.get(k)) for k in {**old, **new} if old.get(k) != new.get(k)}
    return buf.getvalue(), changed, params


def _overrides(changes: dict[str, Any]) -> Callable[[Any], None]:
    def change(doc: Any) -> None:
        for key, value in changes.items():
            _set(doc, key, value)

    return change


def _restore_base(doc: Any, profiles: dict[str, Any]) -> None:
    """Put back the base values recorded when the current profile was applied."""
    current = doc.get("profile")
    applied = {} if current == BASE_PROFILE else flatten(profiles.get(current) or {})
    for key, value in flatten(profiles.pop(BASE_PROFILE, None) or {}).items():
        if key in applied and _get(doc, key) != applied[key]:
            log.warning(
                "%s is %r, not %r as profile %s set it: an edit made while that profile was "
                "applied is replaced by the base value %r",
                key,
                _get(doc, key),
                applied[key],
                current,
                value,
            )
        _set(doc, key, value)


def _overlay(doc: Any, profiles: dict[str, Any], profile: str) -> None:
    """Write `profile`'s values, recording the base values they replace under profiles.demo."""
    overlay = flatten(profiles[profile] or {})
    replaced = {key: _get(doc, key) for key in overlay}
    for key, value in overlay.items():
        _set(doc, key, value)
    if replaced:
        profiles[BASE_PROFILE] = _nest(replaced)
        profiles.yaml_add_eol_comment(_RECORD_COMMENT, BASE_PROFILE, column=11)


def _profile(profile: str, source: Path) -> Callable[[Any], None]:
    def change(doc: Any) -> None:
        profiles = doc.get("profiles") or {}
        if profile != BASE_PROFILE and profile not in profiles:
            raise ParamsError(
                f"profile {profile!r} is not defined under `profiles:` in {source}; "
                f"defined: {sorted({*profiles, BASE_PROFILE})}"
            )
        _restore_base(doc, profiles)
        if profile != BASE_PROFILE:
            _overlay(doc, profiles, profile)
        _set(doc, "profile", profile)

    return change


def update_params(changes: dict[str, Any], path: Path) -> dict[str, tuple[Any, Any]]:
    """Set dotted keys to values; returns {key: (old, new)} for the values that changed."""
    text, changed, _ = _edit(path, _overrides(changes))
    path.write_text(text)  # only after the new values validated
    return changed


def preview_params(
    path: Path, profile: str | None = None, overrides: dict[str, str] | None = None
) -> Params:
    """The params a profile and overrides would give, validated, without writing the file."""
    return _edit(path, _preview(path, profile, overrides))[2]


def _preview(
    path: Path, profile: str | None, overrides: dict[str, str] | None
) -> Callable[[Any], None]:
    changes = {k: yaml.safe_load(v) for k, v in (overrides or {}).items()}

    def change(doc: Any) -> None:
        if profile:
            _profile(profile, path)(doc)
        _overrides(changes)(doc)

    return change


def changes_anything(
    path: Path, profile: str | None = None, overrides: dict[str, str] | None = None
) -> bool:
    """Whether a profile and overrides would change a value the stages read."""
    return bool((profile or overrides) and _edit(path, _preview(path, profile, overrides))[1])


def set_params(overrides: dict[str, str], path: Path) -> dict[str, tuple[Any, Any]]:
    """`key=value` strings from a CLI or flow parameter; values are parsed as YAML scalars."""
    return update_params({k: yaml.safe_load(v) for k, v in overrides.items()}, path)


def apply_profile(profile: str, path: Path) -> dict[str, tuple[Any, Any]]:
    """Switch params.yaml to `profile`; returns {key: (old, new)} for the values that changed."""
    text, changed, _ = _edit(path, _profile(profile, path))
    path.write_text(text)  # only after the new values validated
    return changed
