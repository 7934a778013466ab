"""Every augmentation treats images and masks consistently; a label patch stays a valid label patch."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from em_chunks.learn.augment import TRANSFORMS, build_augmentor

OUT = (8, 24, 24)
KINDS = {"image": "img", "label": "mask", "valid": "mask"}
PARAMS = {"elastic": {"alpha": 4, "sigma": 4}, "misalignment": {"rotate_ratio": 0.5, "displacement": 3},
          "flip": {"isotropic": True}, "missing_section": {"num_sections": 2}}


def blocky(shape, seed=0):
    """Labels in 4-voxel blocks with large ids (uint64 beyond float precision) and an image = f(label)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(1, 6, size=tuple(-(-s // 4) for s in shape))
    label = np.kron(small, np.ones((4, 4, 4), np.int64))[tuple(slice(0, s) for s in shape)].astype(np.uint64)
    label += np.uint64(2**60)  # ids a float32/64 interpolator would corrupt
    image = ((label - np.uint64(2**60)).astype(np.float32) / 10.0)
    valid = (rng.random(shape) > 0.1).astype(np.uint8)
    return image, label, valid


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_transform_consistent_on_image_and_masks(name):
    aug = build_augmentor({name: {"p": 1.0, **PARAMS.get(name, {})}})
    in_shape = aug.input_shape(OUT)
    assert all(i >= o for i, o in zip(in_shape, OUT))
    image, label, valid = blocky(in_shape)
    ids = set(np.unique(label))
    for seed in range(4):
        rng = np.random.default_rng(seed)
        out = aug({"image": image, "label": label, "valid": valid}, KINDS, OUT, rng)
        assert {k: v.shape for k, v in out.items()} == {k: OUT for k in KINDS}
        assert out["label"].dtype == np.uint64 and out["valid"].dtype == np.uint8
        assert set(np.unique(out["label"])) <= ids, "masks must only take values that were there"
        assert set(np.unique(out["valid"])) <= {0, 1}
        if TRANSFORMS[name].geometric:
            # the same draw with the image treated as a mask: nearest sampling must give exactly f(label),
            # i.e. images and masks were moved by the same geometry
            as_mask = aug({"image": image, "label": label, "valid": valid}, {**KINDS, "image": "mask"}, OUT,
                          np.random.default_rng(seed))
            expected = (out["label"] - np.uint64(2**60)).astype(np.float32) / 10.0
            np.testing.assert_array_equal(as_mask["image"], expected)
            np.testing.assert_array_equal(as_mask["label"], out["label"])
            # and the linearly interpolated image agrees with it away from label boundaries
            inside = ndimage.maximum_filter(expected, size=(1, 3, 3)) == ndimage.minimum_filter(expected, size=(1, 3, 3))
            inside[:, [0, -1], :] = inside[:, :, [0, -1]] = False  # the border's true neighbours are not in view
            agree = np.isclose(out["image"], expected, atol=1e-4)[inside].mean()
            assert agree > 0.98, f"{name}: image and label disagree on {1 - agree:.1%} of interior voxels"
        else:
            # image-only transforms leave masks exactly as the centre crop of the input
            crop = tuple(slice((i - o) // 2, (i - o) // 2 + o) for i, o in zip(in_shape, OUT))
            np.testing.assert_array_equal(out["label"], label[crop])
            np.testing.assert_array_equal(out["valid"], valid[crop])


def test_disabled_or_unfired_transform_still_crops_and_costs_no_margin():
    aug = build_augmentor({"elastic": {"p": 0.0, "alpha": 5}})
    in_shape = aug.input_shape(OUT)
    assert in_shape == (OUT[0], OUT[1] + 10, OUT[2] + 10)
    image, label, valid = blocky(in_shape)
    out = aug({"image": image, "label": label}, KINDS, OUT, np.random.default_rng(0))
    np.testing.assert_array_equal(out["label"], label[:, 5:-5, 5:-5])
    assert build_augmentor({"elastic": {"enabled": False, "alpha": 5}}).input_shape(OUT) == OUT


def test_margins_accumulate_upstream():
    aug = build_augmentor({"rescale": {"p": 1, "scale": [0.8, 1.5]}, "elastic": {"p": 1, "alpha": 4},
                           "missing_section": {"p": 1, "num_sections": 3}})
    shapes = aug.shapes(OUT)
    assert shapes[-1] == OUT
    assert shapes[0][0] == OUT[0] + 3  # missing sections need deeper input
    assert shapes[0][1] >= int(np.ceil((OUT[1] + 8) * 1.5))  # rescale sees what elastic needs, zoomed out


def test_unknown_transform_and_bad_params_are_refused():
    with pytest.raises(ValueError, match="unknown transforms"):
        build_augmentor({"elastik": {}})
    with pytest.raises(ValueError):
        build_augmentor({"flip": {"p": 2.0}})
