"""The PNG preview: three panels side by side, each under a title saying what it shows."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np

from em_chunks.engine.preview import TITLE_HEIGHT, _affinity_rgb, _gray, _label_rgb, write_preview


def test_preview_panels_have_titles(tmp_path):
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 255, (40, 120), dtype=np.uint8)
    affs = rng.random((3, 40, 120)).astype(np.float32)
    seg = rng.integers(0, 9, (40, 120))
    image = iio.imread(write_preview(tmp_path / "p.png", raw, affs, seg))
    assert image.shape == (TITLE_HEIGHT + 40, 3 * 120 + 2 * 4, 3)
    for i, panel in enumerate((_gray(raw), _affinity_rgb(affs), _label_rgb(seg))):
        x0 = i * (120 + 4)
        # the data, unchanged, below its title
        assert np.array_equal(image[TITLE_HEIGHT:, x0 : x0 + 120], panel)
        strip = image[:TITLE_HEIGHT, x0 : x0 + 120]
        dark = (strip.max(axis=-1) < 128).sum()
        assert 20 < dark < strip.shape[0] * strip.shape[1] // 3, (i, dark)  # black text on white
    # the titles differ (raw / affinities / segmentation), so the strips do
    strips = [image[:TITLE_HEIGHT, i * 124 : i * 124 + 120] for i in range(3)]
    assert not np.array_equal(strips[0], strips[1]) and not np.array_equal(strips[1], strips[2])
