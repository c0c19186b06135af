"""Queue an API-format ComfyUI workflow, follow its progress, and download what it outputs.

    python scripts/queue_workflow.py example_workflows/api/framepack_image_to_video_api.json \\
        --server http://127.0.0.1:8188 --set 10.seed=7 --set 1.image=photo.png --out results

Standard library only: it runs with any Python 3.9+, no install needed.

- WORKFLOW is a prompt in ComfyUI's API format (the UI's "Export (API)", or the files in
  example_workflows/api/): {node id: {"class_type": ..., "inputs": {...}}}.
- --set NODE.INPUT=VALUE (repeatable) overrides an input before queueing. VALUE is read as JSON when it parses
  (7, 2.5, true, "text", [..]) and as a plain string otherwise. A string naming a local image or video file
  (e.g. --set 1.image=photo.png) is uploaded through /upload/image and replaced by the name the server gave
  it. An unknown node id or input is refused with the list of valid ones.
- Progress comes from the server's /ws websocket: "executing node 10 (FramePackSampler)" as each node
  starts, and a node's progress bar as "node 10 (FramePackSampler): section 2/5 step 7/25" for nodes with a
  "steps" input whose bar counts sections x steps (FramePackSampler), else as "step 7/25". Nodes whose result
  ComfyUI already has are listed as cached. Without a websocket, /history is polled.
- When the prompt has run, every file its outputs list in /history (videos, images, latents) is downloaded
  through /view into --out (subfolders kept); their paths are written to stdout, one a line.

Exit codes: 0 done and downloaded; 2 bad arguments or workflow (unreadable file, bad --set); 3 the server
refused the prompt (its validation errors are logged); 4 the execution failed or was interrupted (the server's
exception message is logged); 5 the server could not be reached, or --timeout passed. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import mimetypes
import os
import socket
import ssl
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

log = logging.getLogger("queue_workflow")

EXIT_USAGE, EXIT_REFUSED, EXIT_FAILED, EXIT_UNREACHABLE = 2, 3, 4, 5
WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, section 1.3
TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0
POLL_SECONDS = 5.0  # with no websocket message for this long, /history is asked whether the prompt finished


class ClientError(Exception):
    """A failure reported to the user as one message, with the exit code that says what kind it is."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


# ----------------------------------------------------------------------------------------- --set overrides

def parse_override(text: str) -> tuple[str, str, object]:
    """``"12.seed=7"`` -> ``("12", "seed", 7)``: the value as JSON when it parses, else the string."""
    target, equals, raw = text.partition("=")
    node, dot, name = target.partition(".")
    if not (equals and dot and node and name):
        raise ClientError(f"--set {text!r}: expected NODE.INPUT=VALUE, for example --set 12.seed=7", EXIT_USAGE)
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return node, name, value


def apply_overrides(prompt: dict, overrides: list, node_inputs, upload) -> dict:
    """A copy of ``prompt`` with each (node, input, value) set. ``node_inputs(class_type)`` lists the inputs a
    node type has (an input the workflow leaves out can be set too); ``upload(path)`` turns a local media file
    into the name the server stored it under. Every override is checked before anything is uploaded."""
    prompt = json.loads(json.dumps(prompt))
    for node, name, _ in overrides:
        if node not in prompt:
            valid = ", ".join(f"{key} ({prompt[key].get('class_type')})" for key in prompt)
            raise ClientError(f"--set {node}.{name}: the workflow has no node {node!r}; its nodes: {valid}", EXIT_USAGE)
        class_type = prompt[node].get("class_type")
        valid = list(dict.fromkeys([*prompt[node].get("inputs", {}), *node_inputs(class_type)]))
        if name not in valid:
            raise ClientError(f"--set {node}.{name}: node {node} ({class_type}) has no input {name!r}; its "
                              f"inputs: {', '.join(valid)}", EXIT_USAGE)
    for node, name, value in overrides:
        if isinstance(value, str) and is_local_media(value):
            value = upload(Path(value))
        prompt[node].setdefault("inputs", {})[name] = value
    return prompt


def is_local_media(value: str) -> bool:
    kind = mimetypes.guess_type(value)[0] or ""
    return kind.split("/")[0] in ("image", "video") and os.path.isfile(value)


# ----------------------------------------------------------------------------------------- HTTP

class Server:
    """The HTTP side of a ComfyUI server: /prompt, /history, /upload/image, /view."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")

    def request(self, path: str, data: bytes | None = None, headers: dict | None = None) -> bytes:
        request = urllib.request.Request(self.url + path, data=data, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.read()
        except urllib.error.HTTPError:
            raise  # an answer, not a connection problem: the caller says what it means
        except (urllib.error.URLError, OSError) as err:
            raise ClientError(f"cannot reach the ComfyUI server at {self.url} ({err}); is it running? "
                              f"(--server sets its address)", EXIT_UNREACHABLE) from err

    def get_json(self, path: str):
        return json.loads(self.request(path))

    def node_inputs(self, class_type: str) -> list:
        """The input names of a node type, from /object_info (none when the server does not know the type)."""
        info = self.get_json(f"/object_info/{urllib.parse.quote(class_type)}").get(class_type, {})
        return [name for section in ("required", "optional") for name in info.get("input", {}).get(section, {})]

    def queue(self, prompt: dict, client_id: str) -> str:
        body = json.dumps({"prompt": prompt, "client_id": client_id}).encode()
        try:
            answer = json.loads(self.request("/prompt", body, {"Content-Type": "application/json"}))
        except urllib.error.HTTPError as err:
            raise ClientError(refusal_message(err.read()), EXIT_REFUSED) from err
        for node, errors in answer.get("node_errors", {}).items():  # outputs that will not run; the rest will
            log.warning("node %s and what depends on it will not run", describe_node_errors(node, errors))
        return answer["prompt_id"]

    def upload(self, path: Path) -> str:
        boundary = uuid.uuid4().hex
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{path.name}\"\r\n"
                f"Content-Type: {kind}\r\n\r\n").encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        try:
            answer = json.loads(self.request("/upload/image", body,
                                             {"Content-Type": f"multipart/form-data; boundary={boundary}"}))
        except urllib.error.HTTPError as err:
            raise ClientError(f"uploading {path} failed: HTTP {err.code} {err.read()[:500]!r}", EXIT_FAILED) from err
        name = f"{answer['subfolder']}/{answer['name']}" if answer.get("subfolder") else answer["name"]
        log.info("uploaded %s as %s", path, name)
        return name

    def download(self, entry: dict, out: Path) -> Path:
        """One output file (``{"filename", "subfolder", "type"}``) into ``out``, written whole or not at all."""
        subfolder, filename = entry.get("subfolder", ""), entry["filename"]
        target = out / subfolder / filename
        if out.resolve() not in target.resolve().parents:
            raise ClientError(f"the server named an output outside the output folder: {subfolder}/{filename}",
                              EXIT_FAILED)
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder,
                                        "type": entry.get("type", "output")})
        data = self.request(f"/view?{query}")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(data)
        partial.replace(target)
        return target


def refusal_message(body: bytes) -> str:
    """The text of a 400 answer from /prompt: the error and every node's validation errors."""
    try:
        answer = json.loads(body)
    except ValueError:
        return f"the server refused the prompt: {body[:2000].decode(errors='replace')}"
    error = answer.get("error", {})
    lines = [f"the server refused the prompt: {error.get('message', error)}"
             + (f" ({error['details']})" if error.get("details") else "")]
    for node, errors in answer.get("node_errors", {}).items():
        lines.append(f"  node {describe_node_errors(node, errors)}")
    return "\n".join(lines)


def describe_node_errors(node: str, errors: dict) -> str:
    """``10 (FramePackSampler): <message>: <details>; ...`` from one node's entry in node_errors."""
    parts = [f"{e.get('message', '')}: {e.get('details', '')}".rstrip(": ") for e in errors.get("errors", [])]
    return f"{node} ({errors.get('class_type', '?')}): " + "; ".join(parts)


def output_files(history_entry: dict) -> list:
    """Every saved ``{"filename", "subfolder", "type"}`` entry in a history entry's outputs, whatever its kind.

    Previews in ComfyUI's temp folder (the schedule picture, PreviewImage) are left out: they are pictures for
    the UI, not results, and the server may have removed them already."""
    files = []
    for outputs in history_entry.get("outputs", {}).values():
        for entries in outputs.values():
            if isinstance(entries, list):
                files += [e for e in entries if isinstance(e, dict) and "filename" in e and e.get("type") != "temp"]
    return files


def execution_failure(history_entry: dict) -> str | None:
    """The error text of a failed or interrupted run, None when it succeeded."""
    status = history_entry.get("status", {})
    if status.get("status_str") != "error":
        return None
    for kind, message in status.get("messages", []):
        if kind == "execution_error":
            return (f"execution failed in node {message.get('node_id')} ({message.get('node_type')}): "
                    f"{message.get('exception_type', '')}: {message.get('exception_message', '').strip()}")
        if kind == "execution_interrupted":
            return f"execution was interrupted in node {message.get('node_id')} ({message.get('node_type')})"
    return "execution failed (the server gave no message)"


# ----------------------------------------------------------------------------------------- websocket (RFC 6455)

def accept_key(key: str) -> str:
    """The Sec-WebSocket-Accept value a server must answer to ``key``."""
    return base64.b64encode(hashlib.sha1((key + WEBSOCKET_GUID).encode()).digest()).decode()


def encode_frame(opcode: int, payload: bytes, mask: bytes) -> bytes:
    """One final frame from the client (client frames are always masked)."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def parse_frame(buffer: bytes):
    """``(fin, opcode, payload, frame length)`` of the frame at the start of ``buffer``, or None while it is
    incomplete. Masked frames (which a server should not send) are unmasked."""
    if len(buffer) < 2:
        return None
    fin, opcode = bool(buffer[0] & 0x80), buffer[0] & 0x0F
    masked, length, offset = bool(buffer[1] & 0x80), buffer[1] & 0x7F, 2
    if length == 126:
        if len(buffer) < 4:
            return None
        length, offset = struct.unpack_from("!H", buffer, 2)[0], 4
    elif length == 127:
        if len(buffer) < 10:
            return None
        length, offset = struct.unpack_from("!Q", buffer, 2)[0], 10
    mask = buffer[offset:offset + 4] if masked else b""
    offset += len(mask)
    if masked and len(mask) < 4 or len(buffer) < offset + length:
        return None
    payload = buffer[offset:offset + length]
    if masked:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return fin, opcode, payload, offset + length


class WebSocket:
    """A minimal websocket client: the opening handshake, then whole text/binary messages; answers pings."""

    def __init__(self, url: str, timeout: float):
        parts = urllib.parse.urlsplit(url)
        secure = parts.scheme in ("https", "wss")
        port = parts.port or (443 if secure else 80)
        self.sock = socket.create_connection((parts.hostname, port), timeout=timeout)
        if secure:
            self.sock = ssl.create_default_context().wrap_socket(self.sock, server_hostname=parts.hostname)
        key = base64.b64encode(os.urandom(16)).decode()
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                          .encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.read_more()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
        if " 101 " not in f"{status} " or headers.get("sec-websocket-accept") != accept_key(key):
            raise ConnectionError(f"the server did not open a websocket at {url}: {status}")

    def read_more(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the websocket")
        self.buffer += data

    def receive(self) -> tuple[int, bytes]:
        """The next whole message as (TEXT or BINARY, payload); socket.timeout when none came in time."""
        opcode, parts = None, []
        while True:
            frame = parse_frame(self.buffer)
            if frame is None:
                self.read_more()
                continue
            fin, frame_opcode, payload, size = frame
            self.buffer = self.buffer[size:]
            if frame_opcode == PING:
                self.sock.sendall(encode_frame(PONG, payload, os.urandom(4)))
            elif frame_opcode == CLOSE:
                raise ConnectionError("the server closed the websocket")
            elif frame_opcode != PONG:
                opcode = frame_opcode if frame_opcode != CONTINUATION else opcode
                parts.append(payload)
                if fin:
                    return opcode, b"".join(parts)

    def close(self) -> None:
        try:
            self.sock.sendall(encode_frame(CLOSE, struct.pack("!H", 1000), os.urandom(4)))
        except OSError:
            pass
        self.sock.close()


# ----------------------------------------------------------------------------------------- following a prompt

def progress_text(value: int, maximum: int, steps) -> str:
    """``section 2/5 step 7/25`` when the bar counts sections x ``steps``, else ``step 7/25``."""
    if isinstance(steps, int) and steps > 0 and maximum > steps and maximum % steps == 0 and value > 0:
        section, step = divmod(value - 1, steps)
        return f"section {section + 1}/{maximum // steps} step {step + 1}/{steps}"
    return f"step {value}/{maximum}"


def node_name(prompt: dict, node) -> str:
    return f"node {node} ({prompt.get(str(node), {}).get('class_type', '?')})"


def follow(socket_: WebSocket | None, server: Server, prompt: dict, prompt_id: str, deadline: float) -> dict:
    """Log the prompt's progress until it has run; its /history entry. Without a websocket (or after losing
    it) /history is polled; it is also asked whenever the websocket has been quiet for ``POLL_SECONDS``."""
    while True:
        if time.time() > deadline:
            raise ClientError(f"prompt {prompt_id} did not finish before --timeout; it keeps running on the server "
                              f"(POST /interrupt stops it)", EXIT_UNREACHABLE)
        if socket_ is None:
            time.sleep(POLL_SECONDS)
        else:
            try:
                opcode, payload = socket_.receive()
            except socket.timeout:
                opcode = None
            except (ConnectionError, OSError) as err:
                log.warning("lost the websocket (%s): polling /history instead", err)
                socket_ = None
                continue
            if opcode == TEXT and log_message(json.loads(payload), prompt, prompt_id):
                return finished_entry(server, prompt_id, attempts=100)
            if opcode is not None:
                continue  # a message, or a binary preview (skipped)
        entry = finished_entry(server, prompt_id, attempts=1)
        if entry is not None:
            return entry


def finished_entry(server: Server, prompt_id: str, attempts: int) -> dict | None:
    """The prompt's /history entry once it has finished, asking up to ``attempts`` times 0.1 s apart."""
    for attempt in range(attempts):
        entry = server.get_json(f"/history/{prompt_id}").get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None:
            return entry
        if attempt + 1 < attempts:
            time.sleep(0.1)
    if attempts > 1:  # the server said it finished: its history entry must be there
        raise ClientError(f"prompt {prompt_id} finished but the server has no history for it", EXIT_FAILED)
    return None


def log_message(message: dict, prompt: dict, prompt_id: str) -> bool:
    """Log one websocket message about our prompt; True once the prompt has finished running."""
    kind, data = message.get("type"), message.get("data") or {}
    if data.get("prompt_id") not in (None, prompt_id):
        return False
    if kind == "executing" and data.get("prompt_id") == prompt_id:
        if data.get("node") is None:
            return True
        log.info("executing %s", node_name(prompt, data["node"]))
    elif kind == "progress":
        steps = prompt.get(str(data.get("node")), {}).get("inputs", {}).get("steps")
        log.info("%s: %s", node_name(prompt, data.get("node")), progress_text(data["value"], data["max"], steps))
    elif kind == "execution_cached" and data.get("nodes"):
        log.info("cached (not re-run): %s", ", ".join(node_name(prompt, n) for n in data["nodes"]))
    elif kind == "execution_error":
        log.error("%s failed: %s", node_name(prompt, data.get("node_id")), data.get("exception_message"))
    return False


def run(args) -> list:
    """Queue the workflow, follow it, download its outputs; the downloaded paths."""
    try:
        prompt = json.loads(Path(args.workflow).read_text())
    except (OSError, ValueError) as err:
        raise ClientError(f"cannot read the workflow {args.workflow}: {err}", EXIT_USAGE) from err
    if not isinstance(prompt, dict) or "nodes" in prompt or not all(
            isinstance(node, dict) and "class_type" in node for node in prompt.values()):
        raise ClientError(f"{args.workflow} is not an API-format workflow ({{node id: {{\"class_type\", "
                          f"\"inputs\"}}}}); in ComfyUI, save one with Workflow > Export (API)", EXIT_USAGE)
    server = Server(args.server)
    overrides = [parse_override(text) for text in args.set]
    prompt = apply_overrides(prompt, overrides, server.node_inputs, server.upload)
    client_id = uuid.uuid4().hex
    ws_url = server.url.replace("http", "ws", 1) + f"/ws?clientId={client_id}"
    try:  # connected before queueing, so no message about the prompt is missed
        socket_ = WebSocket(ws_url, timeout=POLL_SECONDS)
    except (ConnectionRefusedError, socket.gaierror, socket.timeout) as err:
        raise ClientError(f"cannot reach the ComfyUI server at {server.url} ({err}); is it running? (--server sets "
                          f"its address)", EXIT_UNREACHABLE) from err
    except OSError as err:  # reachable, but no websocket (a proxy that does not pass it on): poll instead
        log.warning("no websocket at %s (%s): following the prompt through /history", ws_url, err)
        socket_ = None
    try:
        prompt_id = server.queue(prompt, client_id)
        log.info("queued prompt %s", prompt_id)
        deadline = time.time() + args.timeout if args.timeout else float("inf")
        entry = follow(socket_, server, prompt, prompt_id, deadline)
    finally:
        if socket_ is not None:
            socket_.close()
    failure = execution_failure(entry)
    if failure:
        raise ClientError(failure, EXIT_FAILED)
    files = output_files(entry)
    if not files:
        log.warning("the prompt ran but output no files")
    return [server.download(item, Path(args.out)) for item in files]


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workflow", help="an API-format workflow (.json)")
    parser.add_argument("--server", default="http://127.0.0.1:8188", help="the ComfyUI server (default %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE",
                        help="override an input (repeatable); local image/video files are uploaded")
    parser.add_argument("--out", default="comfyui_outputs", help="folder for the downloaded outputs "
                                                                  "(default %(default)s)")
    parser.add_argument("--timeout", type=float, default=0, help="give up after this many seconds (default 0: "
                                                                 "wait however long the generation takes)")
    args = parser.parse_args(argv)
    if args.timeout < 0:
        parser.error(f"--timeout must be 0 (no limit) or a number of seconds, got {args.timeout:g}")
    try:
        for path in run(args):
            sys.stdout.write(f"{path}\n")
            log.info("downloaded %s", path)
    except ClientError as err:
        log.error("%s", err)
        return err.exit_code
    except urllib.error.HTTPError as err:
        log.error("the server answered %s to %s: %s", err.code, err.url, err.read()[:2000].decode(errors="replace"))
        return EXIT_FAILED
    except KeyboardInterrupt:
        log.error("stopped; a queued prompt keeps running on the server (POST /interrupt stops it)")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
