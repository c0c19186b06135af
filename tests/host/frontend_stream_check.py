"""Watch a streaming FramePack run in ComfyUI's real frontend (headless Chromium over the DevTools protocol).

Loads an API-format prompt into the canvas, queues it, and, once the sampler has shown its third section,
screenshots the page and reads the sampler node's video element (its source and whether it plays); then the same
after the run has finished. Run with an interpreter that has aiohttp (ComfyUI's own venv does):

    python frontend_stream_check.py --server http://127.0.0.1:8188 --prompt graph.json --out shots/

It prints one JSON object: {"during": {...}, "after": {...}}, each with the video elements found and the
screenshot's path.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
from pathlib import Path

from frontend_check import Page, frontend

WATCH_JS = """(() => {
  window.__framepack_shown = 0;
  window.comfyAPI.api.api.addEventListener('executed', e => {
    if (e.detail.node === 'sampler') window.__framepack_shown += 1;
  });
  return true;
})()"""
LOAD_API_JS = """(async (prompt) => {
  await window.comfyAPI.app.app.loadApiJson(prompt, 'streaming');
  await new Promise(r => setTimeout(r, 500));
  return window.comfyAPI.app.app.graph._nodes.length;
})"""
# Zoom the canvas so that every node, the sampler with its video preview included, is in view.
FIT_JS = """(async () => {
  const app = window.comfyAPI.app.app, nodes = app.graph._nodes;
  const x0 = Math.min(...nodes.map(n => n.pos[0])), y0 = Math.min(...nodes.map(n => n.pos[1]));
  const x1 = Math.max(...nodes.map(n => n.pos[0] + n.size[0])), y1 = Math.max(...nodes.map(n => n.pos[1] + n.size[1]));
  const canvas = app.canvas.canvas;
  const scale = Math.min(canvas.width / (x1 - x0 + 80), canvas.height / (y1 - y0 + 160), 1);
  app.canvas.ds.scale = scale;
  app.canvas.ds.offset = [-x0 + 40 / scale, -y0 + 80 / scale];
  app.canvas.setDirty(true, true);
  await new Promise(r => setTimeout(r, 500));
  return scale;
})()"""
OUTPUT_JS = "JSON.stringify(window.comfyAPI.app.app.nodeOutputs?.['sampler'] ?? null)"
# Every <video> on the page, started (muted, as a browser allows), with its position a second later.
VIDEOS_JS = """(async () => {
  const videos = [...document.querySelectorAll('video')];
  for (const v of videos) { v.muted = true; try { await v.play(); } catch (e) {} }
  const before = videos.map(v => v.currentTime);
  await new Promise(r => setTimeout(r, 1500));
  return videos.map((v, i) => ({src: v.currentSrc, ready: v.readyState, duration: v.duration,
                                 advanced: v.currentTime > before[i], paused: v.paused}));
})()"""


async def snapshot(page: Page, path: Path) -> dict:
    await page.evaluate(FIT_JS)
    videos = await page.evaluate(VIDEOS_JS)
    shot = await page.call("Page.captureScreenshot", format="png")
    path.write_bytes(base64.b64decode(shot["data"]))
    return {"videos": videos, "output": await page.evaluate(OUTPUT_JS), "screenshot": str(path)}


async def check(server: str, prompt: dict, out: Path, timeout: float) -> dict:
    async with frontend(server, "--autoplay-policy=no-user-gesture-required", window="1600,1000") as (session, page):
        await page.evaluate(f"{LOAD_API_JS}({json.dumps(prompt)})")
        await page.evaluate(WATCH_JS)
        # Queued as this page's own prompt (its client id), as the Run button does: ComfyUI sends a node's
        # final output only to the client that queued the prompt.
        client_id = await page.evaluate("window.comfyAPI.api.api.clientId")
        async with session.post(server + "/prompt", json={"prompt": prompt, "client_id": client_id}) as response:
            prompt_id = (await response.json())["prompt_id"]
        result = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while "during" not in result and loop.time() < deadline:
            if await page.evaluate("window.__framepack_shown") >= 3:
                result["during"] = await snapshot(page, out / "during.png")
            await asyncio.sleep(0.2)
        while loop.time() < deadline:
            async with session.get(f"{server}/history/{prompt_id}") as response:
                entry = (await response.json()).get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                await asyncio.sleep(1.5)  # the frontend shows the node's final output
                result["after"] = await snapshot(page, out / "after.png")
                result["status"] = entry["status"]["status_str"]
                break
            await asyncio.sleep(0.5)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", required=True)
    parser.add_argument("--prompt", required=True, type=Path, help="an API-format prompt with a 'sampler' node")
    parser.add_argument("--out", required=True, type=Path, help="folder for the two screenshots")
    parser.add_argument("--timeout", type=float, default=240)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(check(args.server, json.loads(args.prompt.read_text()), args.out, args.timeout))
    print(json.dumps(result))  # the report is this script's output


if __name__ == "__main__":
    main()
