"""A real ComfyUI server for the host tests, or a clear skip when none is configured.

Set COMFYUI_PATH to a ComfyUI checkout and COMFYUI_PYTHON (or COMFYUI_VENV) to its interpreter (README,
'Tests', shows how to make both). The server runs on a free loopback
port with temporary model, input, output and custom-node folders: this pack and the test-only stub nodes are
linked in, the tiny reference model is the only diffusion model, and the user's ComfyUI folders are not touched.
"""

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STUBS = Path(__file__).resolve().parent / "stub_nodes"
TINY_NAME = "framepack_tiny.safetensors"
TINY_F1_NAME = "framepack_F1_tiny.safetensors"  # the same weights under an F1 checkpoint's usual name
START_TIMEOUT = 240

SKIP_REASON = "host tests need a ComfyUI: set COMFYUI_PATH (see README, 'Tests'); skipping them"


def require_host():
    """Skip the calling test module when no ComfyUI is configured."""
    if not os.environ.get("COMFYUI_PATH"):
        pytest.skip(SKIP_REASON, allow_module_level=True)


def comfy_python() -> str:
    if os.environ.get("COMFYUI_PYTHON"):
        return os.environ["COMFYUI_PYTHON"]
    if os.environ.get("COMFYUI_VENV"):
        return str(Path(os.environ["COMFYUI_VENV"]) / "bin" / "python")
    return sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, url, output_dir, log_path, models_dir):
        self.url, self.output_dir, self.log_path, self.models_dir = url, output_dir, log_path, models_dir

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.loads(response.read())

    def post(self, path, payload):
        request = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                body = response.read()
                return json.loads(body) if body else {}
        except urllib.error.HTTPError as err:
            return {"http_error": err.code, **json.loads(err.read() or b"{}")}

    def run(self, prompt, timeout=300):
        """Queue an API-format prompt and wait for its history entry."""
        answer = self.post("/prompt", {"prompt": prompt})
        if "prompt_id" not in answer:
            raise AssertionError(f"prompt rejected: {json.dumps(answer)[:2000]}")
        prompt_id, start = answer["prompt_id"], time.time()
        while time.time() - start < timeout:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                return history[prompt_id]
            time.sleep(0.3)
        raise AssertionError(f"prompt {prompt_id} did not finish in {timeout} s; log: {self.log_path}")


def write_test_loras(folder: Path) -> None:
    """The same q/k/v LoRA of the tiny model in two key formats, and a LoRA of another model."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    up, down = torch.randn(96, 4, generator=g) * 0.5, torch.randn(4, 32, generator=g) * 0.5
    fused = {"lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight": up,
             "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": down}
    split = {}
    for part, name in zip(up.split(32), ("to_q", "to_k", "to_v")):
        split[f"lora_unet_transformer_blocks_0_attn_{name}.lora_up.weight"] = part.contiguous()
        split[f"lora_unet_transformer_blocks_0_attn_{name}.lora_down.weight"] = down.clone()
    save_file(fused, str(folder / "hunyuan_original_names.safetensors"))
    save_file(split, str(folder / "framepack_musubi.safetensors"))
    save_file({"lora_unet_input_blocks_1_proj_in.lora_up.weight": up[:8].clone(),
               "lora_unet_input_blocks_1_proj_in.lora_down.weight": down[:, :8].clone()}, str(folder / "sdxl_style.safetensors"))


@pytest.fixture(scope="session")
def server(tmp_path_factory, reference_dir):
    root = tmp_path_factory.mktemp("comfy")
    models, output, nodes = root / "models", root / "output", root / "custom_nodes"
    # vae, text_encoders and clip_vision stay empty unless a test puts (placeholder) files there.
    model_folders = ("diffusion_models", "diffusers", "loras", "vae", "text_encoders", "clip_vision")
    for folder in (*(models / name for name in model_folders), output, nodes, root / "user", root / "input"):
        folder.mkdir(parents=True)
    shutil.copy(reference_dir / "tiny_framepack.safetensors", models / "diffusion_models" / TINY_NAME)
    shutil.copy(reference_dir / "tiny_framepack.safetensors", models / "diffusion_models" / TINY_F1_NAME)
    (nodes / "ComfyUI-FramePack").symlink_to(REPO)
    (nodes / "framepack_test_nodes").symlink_to(STUBS)
    config = root / "extra_model_paths.yaml"
    config.write_text(f"framepack_tests:\n    base_path: {root}\n    custom_nodes: custom_nodes\n"
                      + "".join(f"    {name}: models/{name}\n" for name in model_folders))
    write_test_loras(models / "loras")
    with running_server(root, config, models, ready_node="FramePackSampler") as server:
        yield server


@contextlib.contextmanager
def running_server(root: Path, config: Path, models: Path, ready_node: str):
    """A ComfyUI server on a free port over the folders of ``root`` (output, input, user) and the model paths of
    ``config``, ready once ``/object_info/<ready_node>`` answers; stopped on exit."""
    port = free_port()
    log_path = root / "comfyui.log"
    output = root / "output"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [comfy_python(), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
             "--disable-auto-launch", "--output-directory", str(output), "--input-directory", str(root / "input"),
             "--extra-model-paths-config", str(config), "--user-directory", str(root / "user")],
            cwd=os.environ["COMFYUI_PATH"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = Server(f"http://127.0.0.1:{port}", output, log_path, models)
    try:
        start = time.time()
        while True:
            if process.poll() is not None:
                pytest.fail(f"ComfyUI exited during startup:\n{log_path.read_text()[-3000:]}")
            try:
                server.get(f"/object_info/{ready_node}")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.time() - start > START_TIMEOUT:
                    process.kill()
                    pytest.fail(f"ComfyUI not ready after {START_TIMEOUT} s:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.5)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
