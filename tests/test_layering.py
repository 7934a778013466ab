"""The layering (geometry <- config <- io/ops <- learn <- engine <- api <- cli) and the purity of kernels,
enforced by import-linter contracts in pyproject.toml rather than by memory."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    exe = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run([str(exe)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "4 kept, 0 broken" in proc.stdout


def test_real_data_tests_fail_without_the_data(tmp_path):
    """Missing ../shared/data is a failure with a hint, not a skip (tests/_data.py)."""
    import os

    env = {**os.environ, "EMCHUNKS_SHARED_DATA": str(tmp_path / "absent")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
                           "tests/test_tileset_cli.py", "-k", "real_tiffs"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert "real EM data missing" in proc.stdout and "skipped" not in proc.stdout, proc.stdout[-2000:]
