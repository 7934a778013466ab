"""The layering (geometry <- ops <- config <- io <- learn <- engine <- api <- cli), the purity of kernels and
of geometry, and no import circle in the decode kernels: enforced by import-linter contracts in pyproject.toml
and by the import graph (grimp, which import-linter is built on) rather than by memory."""

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    exe = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run([str(exe)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "5 kept, 0 broken" in proc.stdout


def _graph(external: bool = False):
    return grimp.build_graph("em_chunks", include_external_packages=external)


def _cycles(graph, modules: set[str]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), imports inside functions included."""
    adj = {m: sorted(x for x in graph.find_modules_directly_imported_by(m) if x in modules) for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in adj[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for m in sorted(modules):
        if m not in index:
            visit(m)
    return out


def test_no_import_circle_in_the_decode_kernels_config_and_engine():
    graph = _graph()
    scope = {m for m in graph.modules if m.startswith(("em_chunks.ops", "em_chunks.config", "em_chunks.geometry",
                                                        "em_chunks.engine"))}
    assert "em_chunks.ops.params" in scope and len(scope) > 40
    assert _cycles(graph, scope) == []
    # the decode vocabulary is a leaf of the kernels: it imports none of them
    assert {m for m in graph.find_modules_directly_imported_by("em_chunks.ops.params")
            if m.startswith("em_chunks.ops")} == set()


def test_geometry_imports_nothing_but_numpy_and_the_standard_library():
    graph = _graph(external=True)
    geometry = {m for m in graph.modules if m == "em_chunks.geometry" or m.startswith("em_chunks.geometry.")}
    assert len(geometry) >= 3
    imported = {x for m in geometry for x in graph.find_modules_directly_imported_by(m)} - geometry
    # em_chunks.errors (the user-facing exception types) is the one project module allowed: it imports nothing
    assert graph.find_modules_directly_imported_by("em_chunks.errors") <= {"__future__"}
    outside = {x.split(".")[0] for x in imported - {"em_chunks.errors"}}
    assert "numpy" in outside and outside - {"numpy"} - set(sys.stdlib_module_names) == set(), outside


def test_real_data_tests_fail_without_the_data(tmp_path):
    """Missing ../shared/data is a failure with a hint, not a skip (tests/_data.py)."""
    import os

    env = {**os.environ, "EMCHUNKS_SHARED_DATA": str(tmp_path / "absent")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
                           "tests/test_tileset_cli.py", "-k", "real_tiffs"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert "real EM data missing" in proc.stdout and "skipped" not in proc.stdout, proc.stdout[-2000:]
