"""Open workflows in ComfyUI's real frontend (headless Chromium over the DevTools protocol).

For each workflow it reports the node types the frontend does not know (what its "missing nodes" dialog
would list) and the nodes it flags with errors, and can save a screenshot as the workflow's thumbnail.
Run with an interpreter that has aiohttp (ComfyUI's own venv does):

    python frontend_check.py --server http://127.0.0.1:8188 [--thumbnails] example_workflows/*.json

It prints one JSON object: {workflow file: {"missing": [...], "errors": [...], "dialog": [...]}}; with --api
each entry also holds "api", the prompt the frontend's Export (API) writes for the loaded workflow.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import aiohttp

# Ready when the server's node definitions are registered (a core node and one of this pack's).
READY_JS = ("Boolean(window.comfyAPI?.app?.app?.graph && window.LiteGraph?.registered_node_types?.KSampler"
            " && window.LiteGraph.registered_node_types.FramePackSampler)")
# The frontend's "Some Nodes Are Missing" dialog, if it is open: the node types it lists.
DIALOG_JS = """(() => {
  const dialog = [...document.querySelectorAll('[role="dialog"]')]
    .find(d => d.innerText.includes('Some Nodes Are Missing'));
  if (!dialog) return [];
  const items = [...dialog.querySelectorAll('li, [role="option"], .p-listbox-option')].map(e => e.innerText.trim());
  return items.length ? items : [dialog.innerText];
})()"""
CLOSE_DIALOGS_JS = """(async () => {
  for (const button of document.querySelectorAll('[role="dialog"] button[aria-label="Close"], .p-dialog-close-button'))
    button.click();
  await new Promise(r => setTimeout(r, 300));
  return document.querySelectorAll('[role="dialog"]').length;
})()"""
LOAD_JS = """(async (workflow) => {
  const app = window.comfyAPI.app.app;
  await app.loadGraphData(workflow, true, true, "check");
  await new Promise(r => setTimeout(r, 500));
  const known = window.LiteGraph.registered_node_types;
  const missing = [...new Set(workflow.nodes.map(n => n.type).filter(t => !known[t]))];
  const errors = app.graph._nodes.filter(n => n.has_errors).map(n => n.type);
  app.canvas.ds.scale = 1;
  const nodes = app.graph._nodes;
  const xs = nodes.map(n => n.pos[0]), ys = nodes.map(n => n.pos[1]);
  const xe = nodes.map(n => n.pos[0] + n.size[0]), ye = nodes.map(n => n.pos[1] + n.size[1]);
  const [x0, y0, x1, y1] = [Math.min(...xs), Math.min(...ys), Math.max(...xe), Math.max(...ye)];
  const canvas = app.canvas.canvas;
  const scale = Math.min(canvas.width / (x1 - x0 + 80), canvas.height / (y1 - y0 + 160), 1.2);
  app.canvas.ds.scale = scale;
  app.canvas.ds.offset = [-x0 + 40, -y0 + 80];
  app.canvas.setDirty(true, true);
  await new Promise(r => setTimeout(r, 500));
  return {missing, errors};
})"""

# What Workflow > Export (API) saves: the API-format prompt of the loaded graph.
EXPORT_API_JS = "(async () => (await window.comfyAPI.app.app.graphToPrompt()).output)()"


def save_thumbnail(png: bytes, path: Path, width: int = 960) -> None:
    """A large screenshot (so node text renders) scaled down to a template thumbnail."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    image.resize((width, round(image.height * width / image.width)), Image.LANCZOS).save(path, quality=85)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Page:
    """A minimal DevTools-protocol client for one page."""

    def __init__(self, ws):
        self.ws, self.next_id = ws, 0

    async def call(self, method, **params):
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        while True:
            message = await self.ws.receive_json(timeout=120)
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    async def evaluate(self, expression):
        result = await self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(json.dumps(result["exceptionDetails"])[:2000])
        return result["result"].get("value")


@contextlib.asynccontextmanager
async def frontend(server: str, *flags: str, window: str = "3400,1900"):
    """A headless Chromium showing ComfyUI's frontend at ``server``: yields (aiohttp session, Page) once the
    frontend has registered its nodes."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        raise SystemExit("no chromium on PATH (apt-get install chromium)")
    port = free_port()
    with tempfile.TemporaryDirectory() as profile:
        process = subprocess.Popen([browser, "--headless=new", "--no-sandbox", "--disable-gpu", *flags,
                                    f"--remote-debugging-port={port}", f"--user-data-dir={profile}",
                                    f"--window-size={window}", "about:blank"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(await page_target(session, f"http://127.0.0.1:{port}"),
                                              max_msg_size=0) as ws:
                    page = Page(ws)
                    await page.call("Page.enable")
                    await page.call("Page.navigate", url=server)
                    for _ in range(300):
                        if await page.evaluate(READY_JS):
                            break
                        await asyncio.sleep(0.2)
                    else:
                        raise SystemExit("the ComfyUI frontend did not start in 60 s")
                    await page.evaluate(CLOSE_DIALOGS_JS)  # e.g. the first-run template browser
                    yield session, page
        finally:
            process.terminate()
            process.wait(timeout=30)


async def page_target(session, devtools: str) -> str:
    """The DevTools websocket of the browser's page, once the browser answers."""
    for _ in range(100):
        try:
            async with session.get(devtools + "/json/list") as response:
                return next(t for t in await response.json() if t["type"] == "page")["webSocketDebuggerUrl"]
        except (aiohttp.ClientError, StopIteration):
            await asyncio.sleep(0.2)
    raise SystemExit(f"headless Chromium did not answer at {devtools}")


async def check(server: str, files: list[Path], thumbnails: bool, api: bool = False) -> dict:
    async with frontend(server) as (_, page):
        results = {}
        for file in files:
            await page.evaluate(CLOSE_DIALOGS_JS)
            workflow = json.loads(file.read_text())
            result = await page.evaluate(f"{LOAD_JS}({json.dumps(workflow)})")
            result["dialog"] = await page.evaluate(DIALOG_JS)
            if api:
                result["api"] = await page.evaluate(EXPORT_API_JS)
            results[file.name] = result
            if thumbnails:
                shot = await page.call("Page.captureScreenshot", format="png")
                save_thumbnail(base64.b64decode(shot["data"]), file.with_suffix(".jpg"))
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", required=True)
    parser.add_argument("--thumbnails", action="store_true", help="save a screenshot next to each workflow")
    parser.add_argument("--api", action="store_true", help="also report each workflow's Export (API) prompt")
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args()
    results = asyncio.run(check(args.server, args.files, args.thumbnails, args.api))
    print(json.dumps(results))  # the report is this script's output


if __name__ == "__main__":
    main()
