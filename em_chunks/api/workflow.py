"""The workflow YAML: one strict model composed of the sections each stage owns.

``workflows/*.yaml`` files are validated against it by a test. Unknown top-level keys are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from pydantic import Field, model_validator

from em_chunks.config.base import FrozenModel, apply_overrides, load_yaml, named_overrides, validate
from em_chunks.config.decode import DecodeConfig
from em_chunks.config.output import OutputConfig
from em_chunks.errors import InputError

FORMAT_VERSION = 1


class Workflow(FrozenModel):
    """A whole recipe: training, prediction, decoding, output settings (each section optional)."""

    format_version: int = FORMAT_VERSION
    name: str = "workflow"
    description: str = ""
    voxel_size: Optional[tuple[float, float, float]] = Field(None, description="nm, z y x")
    train: Optional[dict[str, Any]] = None
    predict: Optional[dict[str, Any]] = None
    decode: DecodeConfig = DecodeConfig()
    output: OutputConfig = OutputConfig()

    @model_validator(mode="after")
    def _sections(self) -> "Workflow":
        if self.format_version != FORMAT_VERSION:
            raise ValueError(f"format_version {self.format_version} is not supported (expected {FORMAT_VERSION})")
        if self.train is not None:
            from em_chunks.learn.config import TrainConfig

            TrainConfig.model_validate(self.train)
        if self.predict is not None:
            from em_chunks.config.predict import PredictConfig

            PredictConfig.model_validate(self.predict)
        return self

    def train_config(self) -> Any:
        from em_chunks.learn.config import TrainConfig

        return TrainConfig.model_validate(self.train or {})

    def predict_config(self) -> Any:
        from em_chunks.config.predict import PredictConfig

        return PredictConfig.model_validate(self.predict or {})


BUILTIN = Path(__file__).resolve().parent.parent / "resources"


def resolve_workflow_path(path: str | Path | None) -> Optional[Path]:
    """A path as given, or a built-in workflow by name (e.g. ``demo``) from the package resources."""
    if path is None:
        return None
    p = Path(path)
    if p.is_file():  # not a folder named like a built-in (e.g. ./demo, the demo's own output)
        return p
    for cand in (BUILTIN / f"{path}.yaml", Path("workflows") / f"{path}.yaml"):
        if cand.exists():
            return cand
    raise InputError(f"--config {path}: file not found (and no built-in workflow of that name)")


def load_workflow(path: str | Path | None = None, overrides: list[str] | None = None,
                  override_names: dict[str, str] | None = None) -> Workflow:
    """Read and validate a workflow YAML (``None``: all defaults), with ``key=value`` overrides.

    A bad field is reported against the override that set it (named by ``override_names``, e.g. by
    the flag that made it, else as ``command-line override 'KEY=VALUE'``) or else the file."""
    p = resolve_workflow_path(path)
    data: Any = load_yaml(p) if p is not None else {}
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError(f"{p}: a workflow must be a mapping of sections (train, predict, decode)")
    data = apply_overrides(data, overrides)
    source = str(p) if p else "workflow"
    from em_chunks.config.predict import PredictConfig
    from em_chunks.learn.config import TrainConfig

    for name, model in (("train", TrainConfig), ("predict", PredictConfig)):  # sections first: exact field paths
        if isinstance(data.get(name), dict):
            validate(model, data[name], source, named_overrides(overrides or [], (name,), override_names), f"{name}.")
    return validate(Workflow, data, source, named_overrides(overrides or [], (), override_names))
