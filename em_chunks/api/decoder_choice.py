"""Which decode settings ``predict`` uses, and how it says so.

Precedence (highest first): explicit ``--set decode.KEY=VALUE`` overrides > the ``--config``
workflow's ``decode:`` section > the decoder tuned on validation and stored in the checkpoint
(:func:`em_chunks.learn.checkpoint.stored_decoder`) > the built-in defaults. Overrides change single
fields of whichever base was chosen (``--set decode.dust_remove_size=100`` keeps a tuned merge function).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from em_chunks.config.base import apply_overrides, override_key, validate
from em_chunks.config.decode import DecodeConfig


def workflow_has_decode(workflow: Any) -> bool:
    """Whether the workflow as given (a path, a built-in name or a Workflow) has its own decode section."""
    from em_chunks.api.workflow import Workflow, resolve_workflow_path
    from em_chunks.config.base import load_yaml

    if workflow is None:
        return False
    if isinstance(workflow, Workflow):
        return "decode" in workflow.model_fields_set
    data = load_yaml(resolve_workflow_path(workflow))
    return isinstance(data, dict) and data.get("decode") is not None


def choose_decoder(workflow: Any, wf_decode: DecodeConfig, overrides: Optional[list[str]], info: dict[str, Any],
                   checkpoint: str | Path) -> tuple[DecodeConfig, dict[str, Any]]:
    """The decode config predict uses and a record of where it came from (``source`` + one ``line``)."""
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
    return chosen, {"source": source, "line": line, "tuned": stored}
