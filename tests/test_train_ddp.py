"""DDP under torchrun (Gloo on CPU here, NCCL on GPUs): ranks stay in sync and only rank 0 writes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent("""
    import sys, torch, torch.distributed as dist
    sys.path.insert(0, {tests!r})
    from pathlib import Path
    from test_train_loop import synthetic, config
    from em_chunks.learn.trainer import train
    torch.set_num_threads(1)
    d = Path({tmp!r})
    im, lab = str(d / "image.tif"), str(d / "labels.tif")
    m = train(config(im, lab, iterations=4, extra=["checkpoint_every=2"]), d / "out", progress=False)
    inner = m.get("world_size")
    (d / f"rank{{dist.get_rank()}}.txt").write_text(f"{{inner}} {{m['loss'][-1][1]}}")
""")


@pytest.mark.slow
def test_torchrun_two_ranks(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_train_loop import synthetic

    synthetic(tmp_path)
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent), tmp=str(tmp_path)))
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([str(torchrun), "--standalone", "--nproc_per_node", "2", str(script)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)  # torchrun and its ranks, not only the launcher
        raise
    assert proc.returncode == 0, err[-2000:]
    ranks = [(tmp_path / f"rank{r}.txt").read_text().split() for r in (0, 1)]
    assert [r[0] for r in ranks] == ["2", "2"]  # both ranks ran in a world of two
    assert ranks[0][1] != ranks[1][1]  # each rank trained on its own samples
    assert (tmp_path / "out" / "last.pt").exists() and (tmp_path / "out" / "metrics.json").exists()
