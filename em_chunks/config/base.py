"""The base of every config: frozen, strict pydantic models, so the CLI, the Python API and the run
record are the same object and a typo in a YAML key is an error, not a silent default."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from em_chunks.errors import InputError

FORMAT_VERSION = 1

M = TypeVar("M", bound=BaseModel)


class FrozenModel(BaseModel):
    """Strict and immutable: unknown keys are refused, instances cannot be changed after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def describe_validation_error(err: ValidationError, source: str) -> str:
    """One line naming the file and the first bad field, for the CLI's exit-2 message."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first.get("loc", ())) or "(top level)"
    msg = first.get("msg", "invalid value")
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{source}: field '{loc}': {msg}{more}"


def validate(model: type[M], data: Any, source: str) -> M:
    """Validate ``data`` against ``model``; raise a one-line :class:`InputError` naming ``source``."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise InputError(describe_validation_error(err, source)) from None


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
