"""Configuration models (pydantic, frozen, extra=forbid)."""

from em_chunks.config.base import FORMAT_VERSION, FrozenModel, apply_overrides, load_yaml, validate

__all__ = ["FORMAT_VERSION", "FrozenModel", "apply_overrides", "load_yaml", "validate"]
