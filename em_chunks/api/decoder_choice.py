"""Which decode settings ``predict`` uses, and how it says so.

Precedence (highest first): explicit ``--set decode.KEY=VALUE`` overrides > the ``--config``
workflow's ``decode:`` section > the decoder tuned on validation and stored in the checkpoint
(:func:`em_chunks.learn.checkpoint.stored_decoder`) > the built-in defaults. Overrides change single
fields of whichever base was chosen (``--set decode.dust_remove_size=100`` keeps a tuned merge function).

The inference settings the stored decoder was tuned with (its ``predict``: ``tta``, ``window``) are used
too, each unless given (``--set predict.tta=...`` or the workflow's ``predict:`` section): thresholds
tuned on averaged affinities, or on those of a larger window, belong with those affinities.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from em_chunks.config.base import apply_overrides, override_key, validate
from em_chunks.config.decode import DecodeConfig
from em_chunks.config.predict import TUNED_INFERENCE


def workflow_section(workflow: Any, name: str) -> Any:
    """The section ``name`` as the workflow itself gives it (a path, a built-in name or a Workflow),
    ``None`` when it gives none (so defaults would fill it)."""
    from em_chunks.api.workflow import Workflow, resolve_workflow_path
    from em_chunks.config.base import load_yaml

    if workflow is None:
        return None
    if isinstance(workflow, Workflow):
        return getattr(workflow, name) if name in workflow.model_fields_set else None
    data = load_yaml(resolve_workflow_path(workflow))
    section = data.get(name) if isinstance(data, dict) else None
    return section if isinstance(section, dict) else None


def workflow_has_decode(workflow: Any) -> bool:
    """Whether the workflow as given has its own decode section."""
    return workflow_section(workflow, "decode") is not None


def choose_inference(workflow: Any, cfg: Any, overrides: Optional[list[str]], info: dict[str, Any],
                     checkpoint: str | Path) -> tuple[Any, dict[str, str]]:
    """The predict config with the tuned decoder's inference settings applied where nothing explicit
    sets them, and per setting where it came from (``overrides``, ``config``, ``checkpoint``, ``defaults``)."""
    from em_chunks.learn.checkpoint import stored_decoder

    stored = ((stored_decoder(info, checkpoint) or {}).get("predict")) or {}
    given = set(workflow_section(workflow, "predict") or {})
    update, sources = {}, {}
    for key in TUNED_INFERENCE:
        if any(override_key(o) == ("predict", key) for o in overrides or []):
            sources[key] = "overrides"
        elif key in given:
            sources[key] = "config"
        elif key in stored:
            update[key], sources[key] = (tuple(stored[key]) if key == "window" else stored[key]), "checkpoint"
        else:
            sources[key] = "defaults"
    return (cfg.model_copy(update=update) if update else cfg), sources


def inference_note(cfg: Any, sources: dict[str, str]) -> str:
    """The part of predict's decoder line that says which tuned inference settings are in use."""
    parts = []
    if cfg.tta != "none":
        parts.append(f"TTA {cfg.tta}")
    if sources.get("window") != "defaults" and cfg.window is not None:
        parts.append(f"window {list(cfg.window)}")
    if not parts:
        return ""
    src = {sources[k] for k in TUNED_INFERENCE if sources[k] != "defaults"}
    how = "as tuned, from the checkpoint" if src == {"checkpoint"} else "from " + " and ".join(sorted(src))
    return f"; {', '.join(parts)} ({how})"


def choose_decoder(workflow: Any, wf_decode: DecodeConfig, overrides: Optional[list[str]], info: dict[str, Any],
                   checkpoint: str | Path, note: str = "") -> tuple[DecodeConfig, dict[str, Any]]:
    """The decode config predict uses and a record of where it came from (``source`` + one ``line``);
    ``note`` (:func:`inference_note`) ends the line."""
    from em_chunks.learn.checkpoint import stored_decoder

    explicit = [o for o in overrides or [] if override_key(o)[:1] == ("decode",)]
    stored = stored_decoder(info, checkpoint)
    if workflow_has_decode(workflow):
        chosen, source = wf_decode, "config"
        what = f"the decode section of --config {workflow}"
    elif stored is not None:
        data = apply_overrides({"decode": dict(stored["decode"])}, explicit)["decode"]
        chosen = validate(DecodeConfig, data, f"{checkpoint} (decoder)")
        ari = (stored.get("scores") or {}).get("adapted_rand_error")
        source = "checkpoint"
        what = f"tuned on validation, stored in {checkpoint}" + (f" (validation adapted Rand {ari:.4f})" if ari is not None else "")
    else:
        chosen, source = wf_decode, "defaults"
        what = f"built-in defaults ({checkpoint} carries no tuned decoder)"
    if explicit:
        source, what = f"overrides+{source}", f"--set {' '.join(explicit)} over {what}"
    line = (f"decoder: {chosen.merge_function}, threshold {chosen.thresholds[0]:g}, aff_threshold "
            f"{list(chosen.aff_threshold)}: {what}")
    line += note
    return chosen, {"source": source, "line": line, "tuned": stored}
