"""PyTC DO_SINGLY: 2D images listed one absolute path per line, each predicted and saved on its own."""

import imageio.v3 as iio
import numpy as np
import tifffile
import torch

from em_chunks.api.predict import predict
from em_chunks.cli.main import main
from em_chunks.learn.checkpoint import save_checkpoint
from em_chunks.learn.inference import SlidingWindow, predict_volume
from em_chunks.learn.models import build_model
from em_chunks.synthetic import make_synthetic_em


def test_images_listed_in_a_text_file(cluster_client, tmp_path, capsys):
    image, _ = make_synthetic_em((3, 64, 48), seed=4)
    paths = []
    for i, section in enumerate(image):
        p = tmp_path / f"section{i}.png"
        iio.imwrite(p, section)
        paths.append(p)
    listing = tmp_path / "images.txt"
    listing.write_text("# three sections\n" + "\n".join(str(p) for p in paths) + "\n")
    torch.manual_seed(0)
    model = build_model("unet2d", out_channels=2, widths=(4, 8))
    ckpt = save_checkpoint(tmp_path / "m2d.pt", model, train_config={"data": {"patch": [1, 32, 32], "dims": 2}},
                           offsets=[[1, 0], [0, 1]])
    out = tmp_path / "out"
    metrics = predict(listing, ckpt, out, client=cluster_client, progress=False)
    assert metrics["images"] == 3 and len(metrics["segments_per_image"]) == 3
    for i, p in enumerate(paths):
        affs = tifffile.imread(out / f"section{i}_affinities.tif")
        seg = tifffile.imread(out / f"section{i}_segmentation.tif")
        assert affs.shape == (2, 64, 48) and seg.shape == (64, 48)
        # each image alone equals the whole-volume 2D prediction of that section
        sw = SlidingWindow(volume=(1, 64, 48), window=(1, 32, 32))
        ref = predict_volume(model.eval(), image[i][None], sw)
        # (equal up to float rounding: the worker runs torch with 1 thread, this process with more)
        assert np.allclose(affs, ref[:, 0], atol=1e-5) and affs.std() > 0
    bad = tmp_path / "bad.txt"
    bad.write_text("relative/path.png\n")
    assert main(["predict", str(bad), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o2")]) == 2
    assert "absolute" in capsys.readouterr().err
