"""Screenshot a page with headless Chromium (Debian's ``chromium``) over the DevTools protocol.

    python docs/images/screenshot.py URL OUT.png [SECONDS]

Used once for docs/images/view-demo.png: ``emchunks view`` on the demo's output, the page left to load its
data for SECONDS (default 25) before the capture. WebGL runs on SwiftShader (software), no GPU needed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import tempfile
import time
import urllib.request

from tornado.websocket import websocket_connect

PORT = 9333


async def _capture(ws_url: str, url: str, out: str, wait: float) -> None:
    ws = await websocket_connect(ws_url, max_message_size=1 << 28)
    ids = iter(range(1, 1 << 30))

    async def call(method: str, **params):
        n = next(ids)
        await ws.write_message(json.dumps({"id": n, "method": method, "params": params}))
        while True:
            msg = json.loads(await ws.read_message())
            if msg.get("id") == n:
                return msg

    await call("Emulation.setDeviceMetricsOverride", width=1200, height=760, deviceScaleFactor=1, mobile=False)
    await call("Page.navigate", url=url)
    await asyncio.sleep(wait)
    shot = await call("Page.captureScreenshot", format="png")
    with open(out, "wb") as fh:
        fh.write(base64.b64decode(shot["result"]["data"]))


def main(url: str, out: str, wait: float = 25.0) -> None:
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.Popen(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--enable-unsafe-swiftshader", "--use-angle=swiftshader",
             "--window-size=1200,760", f"--remote-debugging-port={PORT}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                try:
                    targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{PORT}/json"))
                    break
                except OSError:
                    time.sleep(0.2)
            page = next(t for t in targets if t["type"] == "page")
            asyncio.run(_capture(page["webSocketDebuggerUrl"], url, out, wait))
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 25.0)
