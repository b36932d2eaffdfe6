"""Regenerate the README's screenshots: docs/progress.png and docs/dashboard.png.

    python docs/screenshots.py

Launches a copy of hosts/localhost.toml (ports 0, its own name, a private
state directory), renders what ``pyku-launch`` prints on a terminal with
rich's ``Console(record=True)``, runs a small computation and takes a
headless Chromium screenshot of the dashboard meanwhile, then stops the
cluster. Needs ``apt-get install -y chromium``. Only loopback is
contacted: the SVG's web fonts are replaced by a local monospace font, and
Chromium resolves no other host name.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
NAME = "readme-demo"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]


def _chromium_exe() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        sys.exit("chromium is needed: apt-get install -y chromium")
    return exe


def chromium(url: str, out: Path, width: int, height: int, wait: float) -> None:
    """Screenshot ``url`` after ``wait`` seconds of wall-clock time.

    Through the DevTools protocol on loopback rather than ``--screenshot``:
    the dashboard draws over a websocket, which ``--virtual-time-budget``
    does not wait for.
    """
    import asyncio
    import base64
    import json
    import urllib.request

    from tornado.websocket import websocket_connect

    async def shoot(ws_url: str) -> None:
        ws = await websocket_connect(ws_url, max_message_size=64 * 2**20)
        ids = iter(range(1, 1000))

        async def call(method, **params):
            i = next(ids)
            ws.write_message(json.dumps({"id": i, "method": method, "params": params}))
            while True:
                msg = json.loads(await ws.read_message())
                if msg.get("id") == i:
                    return msg.get("result")

        await call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                   deviceScaleFactor=1, mobile=False)
        await call("Page.navigate", url=url)
        await asyncio.sleep(wait)
        shot = await call("Page.captureScreenshot", format="png")
        out.write_bytes(base64.b64decode(shot["data"]))
        ws.close()

    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.Popen(
            [_chromium_exe(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            for line in proc.stderr:
                m = re.search(r"DevTools listening on ws://([^/\s]+)", line)
                if m:
                    break
            else:
                sys.exit("chromium did not start its DevTools endpoint")
            pages = json.load(urllib.request.urlopen(f"http://{m.group(1)}/json", timeout=30))
            asyncio.run(shoot(next(p["webSocketDebuggerUrl"] for p in pages if p["type"] == "page")))
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def svg_to_png(svg: str, out: Path, width: int, work: Path) -> None:
    # No web fonts from a CDN: the local DejaVu Sans Mono instead of Fira Code.
    svg = re.sub(r"@font-face\s*\{[^}]*\}", "", svg)
    svg = svg.replace("Fira Code", "DejaVu Sans Mono")
    vb = re.search(r'viewBox="0 0 ([\d.]+) ([\d.]+)"', svg)
    height = round(width * float(vb.group(2)) / float(vb.group(1)))
    page = work / "progress.html"
    page.write_text(f"<!doctype html><html><body style='margin:0;background:#0c0c0c'>"
                    f"<div style='width:{width}px'>{svg.replace('<svg ', f'<svg width={width!r} ', 1)}</div>"
                    f"</body></html>")
    chromium(page.as_uri(), out, width, height, 1.0)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="pyku-shots-"))
    os.environ["XDG_STATE_HOME"] = str(work / "state")
    sys.path.insert(0, str(ROOT))
    from rich.console import Console

    import launcher
    from launcher.ui.summary import print_summary
    from launcher.ui.progress import Reporter

    text = (ROOT / "hosts" / "localhost.toml").read_text()
    text = re.sub(r'^name = "local"', f'name = "{NAME}"', text, flags=re.M)
    text = re.sub(r"^port = 8786", "port = 0", text, flags=re.M)
    text = re.sub(r"^dashboard_port = 8787", "dashboard_port = 0", text, flags=re.M)
    inv = work / "localhost.toml"
    inv.write_text(text)

    # The live display draws into a throwaway buffer; its final frame and the
    # summary are printed once more on the recording console.
    live = Console(file=io.StringIO(), force_terminal=True, width=96)
    rec_console = Console(record=True, file=io.StringIO(), force_terminal=True, width=96, highlight=False)
    rec_console.print("$ pyku-launch hosts/localhost.toml", style="bold")
    reporter = Reporter(console=live)
    try:
        with reporter:
            rec = launcher.launch(inv, reporter=reporter)
        rec_console.print(reporter.renderable())
        print_summary(rec, rec_console)
        svg = rec_console.export_svg(title="pyku-launch hosts/localhost.toml")
        svg_to_png(svg, DOCS / "progress.png", 1000, work)

        with launcher.connect(NAME) as client:
            import dask.array as da

            stop = threading.Event()

            def load():
                while not stop.is_set():
                    x = da.random.random((6000, 6000), chunks=(500, 500))
                    client.compute((da.sin(x) + x.T).std(axis=0)).result()

            t = threading.Thread(target=load, daemon=True)
            t.start()
            time.sleep(8)  # a few seconds of task stream
            chromium(rec.dashboard, DOCS / "dashboard.png", 1000, 600, 5.0)
            stop.set()
            t.join(timeout=120)
    finally:
        launcher.stop(NAME)
        shutil.rmtree(work, ignore_errors=True)
    for f in ("progress.png", "dashboard.png"):
        print(f"docs/{f}: {(DOCS / f).stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
