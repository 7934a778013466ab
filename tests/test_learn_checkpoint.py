"""Models from the registry and self-describing checkpoints (round trip, weights_only, clear errors)."""

from __future__ import annotations

import pytest
import torch

from em_chunks.errors import InputError
from em_chunks.learn.checkpoint import load_checkpoint, save_checkpoint
from em_chunks.learn.models import build_model, list_models

SMALL = {
    "unet": ({"widths": [4, 8, 8]}, (1, 1, 8, 16, 16)),
    "unet2d": ({"widths": [4, 8], "out_channels": 2}, (2, 1, 16, 16)),
    "rsunet": ({"widths": [4, 6, 8], "out_channels": 12}, (1, 1, 4, 16, 16)),
    "rsunet2d": ({"widths": [4, 6]}, (1, 1, 16, 16)),
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_models_keep_size_and_describe_themselves(name):
    cfg, shape = SMALL[name]
    model = build_model(name, **cfg)
    y = model(torch.randn(shape))
    assert y.shape == (shape[0], model.out_channels) + shape[2:]
    assert model.in_channels == 1 and model.dims == len(shape) - 2
    assert all(s % m == 0 for s, m in zip(shape[2:], model.size_multiple))


def test_rsunet_pools_anisotropically():
    model = build_model("rsunet", widths=[4, 6, 8])
    assert model.size_multiple == (1, 4, 4)  # (1,2,2) twice: z is never pooled


@pytest.mark.parametrize("name", sorted(SMALL))
def test_checkpoint_round_trip_weights_only(tmp_path, name):
    cfg, shape = SMALL[name]
    model = build_model(name, **cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(shape)
    model(x).square().mean().backward()
    opt.step()
    path = save_checkpoint(tmp_path / "m.pt", model, train_config={"iterations": 5, "patch": (8, 16, 16)},
                           iteration=5, optimizer=opt, offsets=[[0, 0, 1]])
    raw = torch.load(path, weights_only=True)  # no pickled classes anywhere
    assert raw["architecture"] == name and raw["train_config"]["patch"] == [8, 16, 16]
    loaded, info = load_checkpoint(path)
    model.eval()
    assert torch.equal(model(x), loaded(x))
    assert info["iteration"] == 5 and info["model_config"] == cfg and "state_dict" not in info
    opt2 = torch.optim.AdamW(loaded.parameters(), lr=1e-3)
    opt2.load_state_dict(info["optimizer"])
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]


def test_checkpoint_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(InputError, match="not a readable"):
        load_checkpoint(junk)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(InputError, match="not an emchunks checkpoint"):
        load_checkpoint(foreign)
    model = build_model("unet", widths=[4, 8])
    good = save_checkpoint(tmp_path / "good.pt", model)
    state = torch.load(good, weights_only=True)
    state["architecture"] = "no-such-net"
    torch.save(state, tmp_path / "unknown.pt")
    with pytest.raises(InputError, match="unknown architecture"):
        load_checkpoint(tmp_path / "unknown.pt")
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes(good.read_bytes()[:500])
    with pytest.raises(InputError, match="not a readable"):
        load_checkpoint(truncated)


def test_unknown_model_name_lists_choices():
    with pytest.raises(InputError, match="rsunet"):
        build_model("resnet")
    assert {"unet", "rsunet", "unet2d", "rsunet2d"} <= set(list_models())
