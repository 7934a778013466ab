"""The ``predict:`` section of a workflow: sliding-window inference settings (PyTC ``INFERENCE``)."""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import Field, model_validator

from em_chunks.config.base import FrozenModel

Triple = tuple[int, int, int]

#: test-time augmentation modes (em_chunks.learn.tta.MODES)
TTAMode = Literal["none", "flip", "xy", "all"]
#: the predict settings a decoder tuned on validation carries with it (how its affinities were made)
TUNED_INFERENCE = ("tta", "window")

#: ``input: demo`` / ``checkpoint: demo`` / ``labels: demo`` in a workflow name the built-in demo's assets;
#: the CLI resolves them to paths (em_chunks.api.demo.demo_paths), em_chunks.api.predict.predict never does
DEMO_SENTINEL = "demo"


class PredictConfig(FrozenModel):
    """How a checkpoint is applied to a volume. Windows lie on one global grid (chunk-independent)."""

    input: Optional[str] = Field(None, description="default INPUT (tile JSON, TIFF or zarr)")
    labels: Optional[str] = Field(None, description="default labels for evaluation")
    checkpoint: Optional[str] = Field(None, description="default checkpoint")
    chunks: Triple = Field((1, 1, 1), description="default pieces per axis (--chunks overrides)")
    window: Optional[Triple] = Field(None, description="model input size; default: the training patch")
    overlap: Optional[Union[int, Triple]] = Field(None, description="overlap of output boxes (default: half)")
    stride: Optional[Union[int, Triple]] = None
    pad: Union[int, Triple] = Field(0, description="symmetric padding of the volume (PyTC PAD_SIZE)")
    crop: Union[int, Triple] = Field(0, description="output cropping per window side (crop_pad)")
    blending: Literal["gaussian", "bump", "constant"] = "gaussian"
    sw_batch_size: int = Field(4, ge=1)
    boundary: str = Field("mirror", description="padding at the volume borders (mirror = numpy/PyTC reflect)")
    tta: TTAMode = "none"
    select_channel: Optional[tuple[int, ...]] = Field(None, description="affinity channels given to the decoder")
    activation: Literal["sigmoid", "none"] = "sigmoid"
    output_dtype: Literal["float32", "uint8"] = "float32"
    amp: bool = Field(True, description="bfloat16 autocast on CUDA (ignored on CPU)")
    device: str = Field("auto", description="auto | cpu | cuda")
    torch_threads: int = Field(1, ge=1, description="torch threads per worker (part of the numerics on CPU)")
    preview: bool = Field(True, description="write preview.png of a middle section")

    @model_validator(mode="after")
    def _one_spacing(self) -> "PredictConfig":
        if self.overlap is not None and self.stride is not None:
            raise ValueError("give overlap or stride, not both")
        return self
