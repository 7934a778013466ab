"""Training loader throughput: augmented patches with affinity targets streamed from 2 Dask workers.

    python benchmarks/train_loader.py TILES_JSON --labels LABELS_JSON --patch 32,128,128 --batches 50

Prints ``samples/s: <number>`` (elastic + flips/transposes + intensity augmentation, aff3 targets, chunk
iterators with prefetch, 2 worker processes), then the model step time (forward + backward of the small
U-Net on one patch, in this process) and the ratio, so we see whether the loader keeps up with training.
Reference: an equivalent gunpowder pipeline gives about 2 samples/s for 32x128x128 on 2 cores.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image", help="image volume: tile JSON, TIFF or zarr")
    ap.add_argument("--labels", help="label volume (default: the 'label' layer of the tile JSON)")
    ap.add_argument("--patch", default="32,128,128", help="output patch Z,Y,X")
    ap.add_argument("--batches", type=int, default=50, help="patches to stream (after one warm-up patch)")
    ap.add_argument("--chunks", default="2,2,2", help="pieces per axis")
    ap.add_argument("--chunk-iter", type=int, default=32, help="patches per loaded chunk")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3, help="model steps to time")
    args = ap.parse_args()

    import numpy as np
    import torch
    from distributed import Client, LocalCluster

    from em_chunks.learn.data import BatchSpec, BatchStream, Rejection, training_volume
    from em_chunks.learn.models import build_model
    from em_chunks.learn.targets import AFF3

    patch = tuple(int(v) for v in args.patch.split(","))
    pieces = tuple(int(v) for v in args.chunks.split(","))
    volume = training_volume(args.image, args.labels)
    augment = {
        "flip": {"p": 1.0, "isotropic": False},
        "elastic": {"p": 1.0, "alpha": 8, "sigma": 8},
        "grayscale": {"p": 1.0, "mode": "mix"},
    }
    spec = BatchSpec(patch, 1, tuple(AFF3), augment, Rejection())
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=":0") as cl, \
            Client(cl) as client:
        stream = iter(BatchStream(client, [volume], spec, pieces, args.chunk_iter, seed=0, window=2 * args.workers + 2))
        t_first = time.perf_counter()
        next(stream)  # start-up: workers import, first chunks load
        startup = time.perf_counter() - t_first
        t0 = time.perf_counter()
        for _ in range(args.batches):
            batch = next(stream)
        dt = time.perf_counter() - t0
        stream.close()
    rate = args.batches / dt
    print(f"volume: {volume.image} {volume.shape}; patch {patch}; chunks {pieces}; {args.workers} workers")
    print(f"first patch after: {startup:.2f} s (cluster start-up, first chunk loads)")
    print(f"samples/s: {rate:.2f}")
    print(f"bytes per sample: {sum(v.nbytes for v in batch.values()) / 1e6:.1f} MB")

    model = build_model("unet", in_channels=1, out_channels=3, widths=[16, 32, 64], norm="group")
    opt = torch.optim.AdamW(model.parameters())
    x = torch.from_numpy(batch["image"]).float()
    times = []
    for _ in range(args.steps + 1):
        t = time.perf_counter()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), torch.from_numpy(batch["target"]).float())
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    step = statistics.median(times[1:])
    print(f"model step time: {step:.3f} s (unet 16-32-64, batch 1, {torch.get_num_threads()} threads, CPU)")
    print(f"loader/model ratio: {rate * step:.1f}x (>= 1 means the loader keeps up)")
    _ = np


if __name__ == "__main__":
    main()
