"""A PNG preview of a middle section: raw | affinities (RGB of the first three channels) | segmentation,
each panel under a title strip that says what it shows."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np


def _gray(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float32)
    lo, hi = float(a.min()), float(a.max())
    g = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    return np.repeat((g * 255).astype(np.uint8)[..., None], 3, axis=-1)


def _affinity_rgb(affs: np.ndarray) -> np.ndarray:
    a = affs.astype(np.float32)
    if affs.dtype == np.uint8:
        a /= 255.0
    rgb = np.stack([a[min(i, a.shape[0] - 1)] for i in range(3)], axis=-1)
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def _label_rgb(seg: np.ndarray) -> np.ndarray:
    """Pseudo-random colours from a hash of the id (stable across sections), black for 0."""
    ids = seg.astype(np.uint64)
    h = (ids * np.uint64(2654435761)) & np.uint64(0xFFFFFF)
    rgb = np.stack([(h >> np.uint64(s)) & np.uint64(255) for s in (16, 8, 0)], axis=-1).astype(np.uint8)
    rgb[ids == 0] = 0
    return rgb


TITLE_HEIGHT = 16  # pixels of the strip above each panel


def _titled(panel: np.ndarray, title: str) -> np.ndarray:
    """``panel`` (H, W, 3) under a white strip with ``title`` in black (cut to the panel's width)."""
    from PIL import Image, ImageDraw, ImageFont

    strip = Image.new("RGB", (panel.shape[1], TITLE_HEIGHT), "white")
    draw = ImageDraw.Draw(strip)
    font = ImageFont.load_default(size=11)
    text = title
    while text and draw.textlength(text, font=font) > panel.shape[1] - 4:
        text = text[:-1]
    draw.text((2, 2), text, fill="black", font=font)
    return np.concatenate([np.asarray(strip), panel], axis=0)


def write_preview(path: Path, raw: Optional[np.ndarray], affs: Optional[np.ndarray], seg: Optional[np.ndarray]) -> Path:
    """Write the panels that are given side by side (each a 2D section; affs is (C, Y, X)), titled."""
    import imageio.v3 as iio

    panels = []
    if raw is not None:
        panels.append(_titled(_gray(raw), "raw"))
    if affs is not None:
        panels.append(_titled(_affinity_rgb(affs), "affinities (RGB = z,y,x)"))
    if seg is not None:
        panels.append(_titled(_label_rgb(seg), "segmentation"))
    gap = np.full((panels[0].shape[0], 4, 3), 255, np.uint8)
    image = np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)
    iio.imwrite(path, image)
    return path
