"""``view``: an emchunks output (and the raw image) in a neuroglancer viewer served from this
machine.

Two small HTTP servers, both bound to localhost unless told otherwise:

* the neuroglancer viewer (its Python package's server): the page, its state, and the raw image,
  read lazily box by box from any input :func:`em_chunks.open_volume` takes (tile JSON, TIFF, zarr);
* a static file server for the output folder (CORS, a random token in every path), from which the
  browser reads the OME-Zarr image and segmentation itself (``zarr3://`` sources), pyramids
  included.

The viewer shows the raw image in grey, the output's image (predict: affinities as RGB; decode: the
mean affinity in grey) and the segmentation as a segmentation layer, all at the output's voxel size.
"""

from __future__ import annotations

import functools
import http.server
import secrets
import socket
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from em_chunks.errors import InputError
from em_chunks.io import layout

INSTALL_HINT = (
    "emchunks view needs the neuroglancer package: pip install 'emchunks[view]' "
    "(or pip install neuroglancer)"
)
RGB_SHADER = """#uicontrol invlerp normalized
void main() {
  emitRGB(vec3(toNormalized(getDataValue(0)), toNormalized(getDataValue(1)),
  toNormalized(getDataValue(2))));
}
"""


def _neuroglancer() -> Any:
    try:
        import neuroglancer
    except ImportError:
        raise InputError(INSTALL_HINT) from None
    return neuroglancer


def _host(bind: str) -> str:
    """The host name a browser uses for a server bound to ``bind``."""
    return socket.getfqdn() if bind in ("0.0.0.0", "::", "") else bind


class _Files(http.server.SimpleHTTPRequestHandler):
    """Files under one folder, at ``/<token>/...`` only, with the CORS headers neuroglancer
    needs."""

    token = ""

    def translate_path(self, path: str) -> str:
        prefix = f"/{self.token}/"
        if not path.startswith(prefix):
            return str(Path(self.directory) / f".no-such-file-{secrets.token_hex(8)}")
        return super().translate_path("/" + path[len(prefix) :])

    def end_headers(self) -> None:
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Allow-Headers", "range")
        self.send_header("Access-Control-Expose-Headers", "content-range")
        super().end_headers()

    def do_OPTIONS(self) -> None:  # noqa: N802 (http.server's naming)
        self.send_response(204)
        self.end_headers()

    def log_message(
        self, format: str, *args: Any
    ) -> None:  # quiet: the browser asks for many chunks
        pass


class FileServer:
    """A threaded static file server for ``root`` on ``bind:port`` (0: any free port)."""

    def __init__(self, root: Path, bind: str = "127.0.0.1", port: int = 0) -> None:
        token = secrets.token_urlsafe(12)
        handler = type("Files", (_Files,), {"token": token})
        self.httpd = http.server.ThreadingHTTPServer(
            (bind, port), functools.partial(handler, directory=str(root))
        )
        self.httpd.daemon_threads = True
        self.url = f"http://{_host(bind)}:{self.httpd.server_address[1]}/{token}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, name="emchunks-files", daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _LazyArray:
    """What neuroglancer's LocalVolume reads: numpy out of a lazy dask array, one requested box at a
    time."""

    def __init__(self, array: Any) -> None:
        self._array = array
        self.shape = tuple(int(s) for s in array.shape)
        self.dtype = np.dtype(array.dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self._array[key].compute(scheduler="threads"))


@dataclass
class ViewSession:
    """A running viewer: its URL, the output's file URL, and how to stop both servers."""

    url: str
    data_url: str
    viewer: Any
    files: FileServer
    layers: list[str] = field(default_factory=list)

    def stop(self) -> None:
        self.files.stop()
        _neuroglancer().server.stop()


def _output_parts(out: Path) -> tuple[str, Optional[str], Sequence[float]]:
    """(image path, segmentation path or None, voxel size) inside an emchunks output of any
    layout."""
    import zarr

    from em_chunks.io.ome_zarr import voxel_size_from_group

    if not (out / "zarr.json").is_file():
        raise InputError(
            f"{out}: not an emchunks output (no zarr.json); "
            "expected the folder a decode or predict wrote"
        )
    root = zarr.open_group(str(out), mode="r")
    if dict(root.attrs).get("ome", {}).get("multiscales"):
        image = ""
        voxel = voxel_size_from_group(root)
    elif (out / "affinities" / "zarr.json").is_file():  # layout 1
        image = "affinities/"
        voxel = voxel_size_from_group(root["affinities"])
    else:
        raise InputError(
            f"{out}: no NGFF image at its root; expected an emchunks decode or predict output"
        )
    seg = layout.label_group(out)
    seg_rel = str(seg.relative_to(out)) + "/" if (seg / "zarr.json").is_file() else None
    return image, seg_rel, voxel or (1.0, 1.0, 1.0)


def serve(
    out: str | Path,
    raw: Optional[str | Path] = None,
    *,
    bind: str = "127.0.0.1",
    port: int = 0,
    data_port: int = 0,
) -> ViewSession:
    """Start the servers and set up the viewer's layers; returns the running
    :class:`ViewSession`."""
    ng = _neuroglancer()
    out = Path(out).resolve()
    image, seg, voxel = _output_parts(out)
    raw_array = None
    if raw is not None:
        from em_chunks.io.volume import open_volume, voxel_size_of

        raw_array = open_volume(raw)
        if raw_array.ndim != 3:
            raise InputError(
                f"--raw {raw}: expected a (Z, Y, X) image, got shape {tuple(raw_array.shape)}"
            )
        raw_voxel = voxel_size_of(raw) or voxel
    import zarr

    ndim = zarr.open_array(f"{out}/{image}{layout.level_name(0)}", mode="r").ndim
    files = FileServer(out, bind, data_port)
    ng.set_server_bind_address(bind, port)
    viewer = ng.Viewer()
    names: list[str] = []
    space = ng.CoordinateSpace(
        names=["x", "y", "z"], units="nm", scales=[voxel[2], voxel[1], voxel[0]]
    )
    with viewer.txn() as s:
        s.dimensions = space
        if raw_array is not None:
            dims = ng.CoordinateSpace(names=["z", "y", "x"], units="nm", scales=list(raw_voxel))
            s.layers["raw"] = ng.ImageLayer(
                source=ng.LocalVolume(_LazyArray(raw_array), dimensions=dims, volume_type="image")
            )
            names.append("raw")
        if (
            ndim == 4
        ):  # affinities: the channel axis becomes neuroglancer's channel dimension, shown as RGB
            transform = ng.CoordinateSpaceTransform(
                output_dimensions=ng.CoordinateSpace(
                    names=["c^", "z", "y", "x"], units=["", "nm", "nm", "nm"], scales=[1.0, *voxel]
                )
            )
            s.layers["affinities"] = ng.ImageLayer(
                source=ng.LayerDataSource(url=f"zarr3://{files.url}/{image}", transform=transform),
                shader=RGB_SHADER,
                opacity=0.5 if raw_array is not None else 1.0,
            )
            names.append("affinities")
        else:
            s.layers["mean affinity"] = ng.ImageLayer(
                source=f"zarr3://{files.url}/{image}", opacity=0.5 if raw_array is not None else 1.0
            )
            names.append("mean affinity")
        if seg is not None:
            s.layers["segmentation"] = ng.SegmentationLayer(source=f"zarr3://{files.url}/{seg}")
            s.layers["segmentation"].selected_alpha = 0.35
            names.append("segmentation")
        shape = zarr.open_array(f"{out}/{image}{layout.level_name(0)}", mode="r").shape[-3:]
        s.position = [shape[2] / 2, shape[1] / 2, shape[0] // 2 + 0.5]
        s.cross_section_scale = (
            max(shape[1], shape[2]) / 640
        )  # voxels per screen pixel: a whole section
        s.layout = "xy"
    return ViewSession(viewer.get_viewer_url(), files.url, viewer, files, names)


def view(
    out: str | Path,
    raw: Optional[str | Path] = None,
    *,
    bind: str = "127.0.0.1",
    port: int = 0,
    data_port: int = 0,
    wait: bool = True,
) -> ViewSession:
    """Serve ``out`` (and ``raw``), print the viewer URL, and (``wait``) keep serving until
    Ctrl-C."""
    session = serve(out, raw, bind=bind, port=port, data_port=data_port)
    print(f"neuroglancer: {session.url}", flush=True)
    print(
        f"layers: {', '.join(session.layers)}; files served from {session.data_url} "
        "(Ctrl-C to stop)",
        file=sys.stderr,
        flush=True,
    )
    if not wait:
        return session
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        session.stop()
    return session
