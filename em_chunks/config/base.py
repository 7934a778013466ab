"""The base of every config: frozen, strict pydantic models, so the CLI, the Python API and the run
record are the same object and a typo in a YAML key is an error, not a silent default."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from em_chunks.errors import InputError

FORMAT_VERSION = 1

M = TypeVar("M", bound=BaseModel)


class FrozenModel(BaseModel):
    """Strict and immutable: unknown keys are refused, instances cannot be changed after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


#: an override as validation sees it: the key path inside the validated model, and how to name it
Override = tuple[tuple[str, ...], str]


def override_key(item: str) -> tuple[str, ...]:
    """``"train.data.patch=[8,16,16]"`` -> ``("train", "data", "patch")``."""
    return tuple(p for p in item.split("=", 1)[0].strip().split(".") if p)


def _culprit(loc: tuple, overrides: Sequence[Override]) -> str | None:
    """The override that set the field at ``loc``: the last one setting it or a section holding it
    (later overrides replace earlier ones), else the last one setting a field inside it."""
    path = tuple(str(p) for p in loc)
    above = [name for key, name in overrides if key == path[: len(key)]]
    below = [name for key, name in overrides if len(key) > len(path) and key[: len(path)] == path]
    return (above or below or [None])[-1]


def describe_validation_error(err: ValidationError, source: str, overrides: Sequence[Override] = (),
                              field_prefix: str = "") -> str:
    """One line naming where the first bad field came from (the file, or the command-line override that
    set it) and what is wrong with it, for the CLI's exit-2 message."""
    first = err.errors()[0]
    loc = (field_prefix + ".".join(str(p) for p in first.get("loc", ()))).rstrip(".") or "(top level)"
    # a section's own check (e.g. DecodeConfig's, which are DecodeParams's) names its field itself
    msg = first.get("msg", "invalid value").removeprefix("Value error, ")
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    culprit = _culprit(tuple(first.get("loc", ())), overrides) if overrides else None
    return f"{culprit or source}: field '{loc}': {msg}{more}"


def validate(model: type[M], data: Any, source: str, overrides: Sequence[Override] = (), field_prefix: str = "") -> M:
    """Validate ``data`` against ``model``; raise a one-line :class:`InputError` naming ``source``, or
    the override among ``overrides`` (key path inside ``model``, name) that set the bad field.
    ``field_prefix``: how the message spells the model's place in a larger file (``"predict."``)."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise InputError(describe_validation_error(err, source, overrides, field_prefix)) from None


def named_overrides(items: Sequence[str], prefix: tuple[str, ...] = (), names: Mapping[str, str] | None = None) -> list[Override]:
    """Overrides as :func:`validate` blames them: keys relative to the model validated at ``prefix``
    (e.g. ``("train",)``), each named ``command-line override 'KEY=VALUE'`` unless ``names`` says
    otherwise (e.g. the flag that produced it)."""
    out: list[Override] = []
    for item in items:
        key = override_key(item)
        if key[: len(prefix)] != prefix:
            continue
        name = (names or {}).get(item) or f"command-line override {item.strip()!r}"
        out.append((key[len(prefix):], name))
    return out


def load_yaml(path: str | Path) -> Any:
    """Read a YAML (or JSON) file, refusing missing or malformed files with a one-line message."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: file not found")
    try:
        return yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise InputError(f"{p}: not valid YAML{where}: {getattr(err, 'problem', err)}") from None


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a nested dict, returning a copy."""
    import copy

    out = copy.deepcopy(data) if data else {}
    for item in overrides or []:
        if "=" not in item:
            raise InputError(f"override {item!r}: expected key=value, e.g. train.iterations=100")
        key, raw = item.split("=", 1)
        if not key.strip() or any(not p for p in key.strip().split(".")):
            raise InputError(f"override {item!r}: expected key=value, e.g. train.iterations=100")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise InputError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = value
    return out
