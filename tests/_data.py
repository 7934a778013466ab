"""Where the real EM volumes are, and the one way a test asks for them.

``$EMCHUNKS_SHARED_DATA`` when set, else ``../shared/data`` beside the repository (as CI clones it),
else ``/work/shared/data``. Missing data is a FAILURE with a one-line hint, never a skip: a machine without
the data would otherwise report green without having run a single real-data check.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if os.environ.get("EMCHUNKS_SHARED_DATA"):
    DATA = Path(os.environ["EMCHUNKS_SHARED_DATA"])
elif not DATA.is_dir():
    DATA = Path("/work/shared/data")


def require(*parts: str) -> Path:
    """``DATA / parts``, or fail the test saying what is missing and where it is looked for."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"real EM data missing: {path} not found (the real-data tests need ../shared/data beside the "
                    f"repository, see its README, or EMCHUNKS_SHARED_DATA pointing at it)", pytrace=False)
    return path
