"""The pure parts of scripts/queue_workflow.py, without ComfyUI: --set parsing and overrides, websocket
frames and handshake, progress text, history entries. The host test runs the client against a real ComfyUI."""

import base64
import hashlib
import importlib.util
import json
import os
import socket
import struct
import threading
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "queue_workflow.py"
spec = importlib.util.spec_from_file_location("queue_workflow", SCRIPT)
client = importlib.util.module_from_spec(spec)
spec.loader.exec_module(client)

PROMPT = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
    "10": {"class_type": "FramePackSampler", "inputs": {"seed": 31337, "steps": 25, "model": ["8", 0]}},
}
NODE_INPUTS = {"LoadImage": ["image"], "FramePackSampler": ["model", "seed", "steps", "resume_file"]}


def no_upload(path):
    raise AssertionError(f"unexpected upload of {path}")


@pytest.mark.parametrize("text, expected", [
    ("12.seed=7", ("12", "seed", 7)),
    ("10.length=2.5", ("10", "length", 2.5)),
    ("10.interpolate_image_embeddings=true", ("10", "interpolate_image_embeddings", True)),
    ("9.text=a girl dances", ("9", "text", "a girl dances")),
    ('9.text="42"', ("9", "text", "42")),
    ("9.text=[0s: a cat] [2s: a dog]", ("9", "text", "[0s: a cat] [2s: a dog]")),
    ("9.text=a=b", ("9", "text", "a=b")),
    ("3.image=photo.png", ("3", "image", "photo.png")),
    ("3.image=", ("3", "image", "")),
])
def test_override_values_are_json_when_they_parse_else_text(text, expected):
    assert client.parse_override(text) == expected


@pytest.mark.parametrize("text", ["12seed=7", "12.seed", ".seed=7", "12.=7", "=7"])
def test_malformed_override_says_the_expected_form(text):
    with pytest.raises(client.ClientError, match="expected NODE.INPUT=VALUE") as err:
        client.parse_override(text)
    assert err.value.exit_code == client.EXIT_USAGE


def test_overrides_set_present_and_absent_inputs_without_touching_the_original():
    overrides = [("10", "seed", 7), ("10", "resume_file", "off"), ("10", "model", ["2", 0])]
    result = client.apply_overrides(PROMPT, overrides, NODE_INPUTS.get, no_upload)
    assert result["10"]["inputs"] == {"seed": 7, "steps": 25, "model": ["2", 0], "resume_file": "off"}
    assert PROMPT["10"]["inputs"]["seed"] == 31337


def test_unknown_node_lists_the_nodes():
    with pytest.raises(client.ClientError) as err:
        client.apply_overrides(PROMPT, [("12", "seed", 7)], NODE_INPUTS.get, no_upload)
    assert "no node '12'" in str(err.value) and "1 (LoadImage), 10 (FramePackSampler)" in str(err.value)
    assert err.value.exit_code == client.EXIT_USAGE


def test_unknown_input_lists_the_inputs_and_nothing_is_uploaded(tmp_path, monkeypatch):
    (tmp_path / "photo.png").write_bytes(b"png")
    monkeypatch.chdir(tmp_path)
    overrides = [("1", "image", "photo.png"), ("10", "sead", 7)]
    with pytest.raises(client.ClientError) as err:
        client.apply_overrides(PROMPT, overrides, NODE_INPUTS.get, no_upload)
    assert "has no input 'sead'" in str(err.value) and "seed, steps, model, resume_file" in str(err.value)


def test_local_media_files_are_uploaded_and_other_names_kept(tmp_path, monkeypatch):
    (tmp_path / "photo.png").write_bytes(b"png")
    (tmp_path / "notes.txt").write_text("not media")
    monkeypatch.chdir(tmp_path)
    uploaded = []

    def upload(path):
        uploaded.append(path)
        return "photo (1).png"

    result = client.apply_overrides(PROMPT, [("1", "image", "photo.png")], NODE_INPUTS.get, upload)
    assert result["1"]["inputs"]["image"] == "photo (1).png" and uploaded == [Path("photo.png")]
    for name in ("on_the_server.png", "notes.txt"):  # not a local file / not an image or video
        result = client.apply_overrides(PROMPT, [("1", "image", name)], NODE_INPUTS.get, no_upload)
        assert result["1"]["inputs"]["image"] == name


def test_accept_key_is_the_rfc_6455_example():
    assert client.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def server_frame(opcode, payload, fin=True):
    """An unmasked frame as a server sends it, built independently of the client's encoder."""
    first = (0x80 if fin else 0) | opcode
    if len(payload) < 126:
        return bytes([first, len(payload)]) + payload
    if len(payload) < 65536:
        return bytes([first, 126]) + struct.pack("!H", len(payload)) + payload
    return bytes([first, 127]) + struct.pack("!Q", len(payload)) + payload


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536, 70000])
def test_frames_of_every_length_encoding_parse_and_wait_for_their_end(size):
    payload = os.urandom(size)
    frame = server_frame(client.BINARY, payload) + b"next"
    assert client.parse_frame(frame) == (True, client.BINARY, payload, len(frame) - 4)
    for cut in {0, 1, 2, 3, len(frame) - 5}:
        if 0 <= cut < len(frame) - 4:
            assert client.parse_frame(frame[:cut]) is None, cut


def test_rfc_6455_examples_parse():
    # Section 5.7: an unmasked and a masked "Hello", and a fragmented one.
    assert client.parse_frame(bytes.fromhex("810548656c6c6f")) == (True, client.TEXT, b"Hello", 7)
    assert client.parse_frame(bytes.fromhex("818537fa213d7f9f4d5158")) == (True, client.TEXT, b"Hello", 11)
    assert client.parse_frame(bytes.fromhex("010348656c")) == (False, client.TEXT, b"Hel", 5)
    assert client.parse_frame(bytes.fromhex("80026c6f")) == (True, client.CONTINUATION, b"lo", 4)


def test_client_frames_are_masked_and_round_trip():
    payload = json.dumps({"type": "feature_flags"}).encode() * 10
    frame = client.encode_frame(client.TEXT, payload, b"\x01\x02\x03\x04")
    assert frame[1] & 0x80, "client frames must be masked"
    assert payload not in frame
    assert client.parse_frame(frame) == (True, client.TEXT, payload, len(frame))


class FakeSocket:
    def __init__(self, data):
        self.data, self.sent = data, []

    def recv(self, size):
        chunk, self.data = self.data[:3], self.data[3:]  # a few bytes at a time, as a slow network delivers
        return chunk

    def sendall(self, data):
        self.sent.append(data)


def test_receive_joins_fragments_and_answers_pings():
    ws = client.WebSocket.__new__(client.WebSocket)
    ws.buffer = b""
    ws.sock = FakeSocket(server_frame(client.TEXT, b'{"type": ', fin=False) + server_frame(client.PING, b"hi")
                         + server_frame(client.CONTINUATION, b'"status"}') + server_frame(client.CLOSE, b""))
    assert ws.receive() == (client.TEXT, b'{"type": "status"}')
    [pong] = ws.sock.sent
    assert client.parse_frame(pong)[1:3] == (client.PONG, b"hi")
    with pytest.raises(ConnectionError, match="closed"):
        ws.receive()


@pytest.mark.parametrize("value, maximum, steps, text", [
    (1, 125, 25, "section 1/5 step 1/25"),
    (32, 125, 25, "section 2/5 step 7/25"),
    (125, 125, 25, "section 5/5 step 25/25"),
    (7, 25, 25, "step 7/25"),  # one section: a plain step count
    (7, 30, 25, "step 7/30"),  # a bar that is not sections x steps
    (7, 30, None, "step 7/30"),
    (7, 50, ["3", 0], "step 7/50"),  # steps linked from another node: unknown here
])
def test_progress_text_counts_sections_and_steps(value, maximum, steps, text):
    assert client.progress_text(value, maximum, steps) == text


def test_messages_about_other_prompts_are_ignored_and_the_end_is_recognised(caplog):
    caplog.set_level("INFO", logger="queue_workflow")
    ours, other = "p1", "p2"
    assert not client.log_message({"type": "executing", "data": {"node": "10", "prompt_id": other}}, PROMPT, ours)
    assert not client.log_message({"type": "executing", "data": {"node": None, "prompt_id": other}}, PROMPT, ours)
    assert not client.log_message({"type": "progress", "data": {"value": 32, "max": 125, "node": "10",
                                                                "prompt_id": ours}}, PROMPT, ours)
    assert client.log_message({"type": "executing", "data": {"node": None, "prompt_id": ours}}, PROMPT, ours)
    assert caplog.messages == ["node 10 (FramePackSampler): section 2/5 step 7/25"]


def test_output_files_of_every_kind_and_failures_from_history():
    entry = {"outputs": {"13": {"images": [{"filename": "v.mp4", "subfolder": "video", "type": "output"}],
                                "animated": [True]},
                         "7": {"latents": [{"filename": "l.latent", "subfolder": "", "type": "output"}]},
                         "9": {"text": ["not a file"]},
                         "4": {"images": [{"filename": "schedule_00001_.png", "subfolder": "", "type": "temp"}]}},
             "status": {"status_str": "success", "messages": []}}
    assert [f["filename"] for f in client.output_files(entry)] == ["v.mp4", "l.latent"]
    assert client.execution_failure(entry) is None
    entry["status"] = {"status_str": "error", "messages": [
        ["execution_start", {}],
        ["execution_error", {"node_id": "10", "node_type": "FramePackSampler", "exception_type": "InputError",
                             "exception_message": "invalid frame schedule 'x'\n"}]]}
    assert client.execution_failure(entry) == ("execution failed in node 10 (FramePackSampler): InputError: "
                                               "invalid frame schedule 'x'")


def test_refusal_message_lists_every_node_error():
    body = json.dumps({"error": {"message": "Prompt outputs failed validation", "details": ""},
                       "node_errors": {"10": {"class_type": "FramePackSampler", "errors": [
                           {"message": "Value not in list", "details": "sampling_mode: 'sideways' not in [...]"}]}}})
    assert client.refusal_message(body.encode()) == (
        "the server refused the prompt: Prompt outputs failed validation\n"
        "  node 10 (FramePackSampler): Value not in list: sampling_mode: 'sideways' not in [...]")


def test_a_ui_format_workflow_is_refused_with_what_to_do(tmp_path):
    path = tmp_path / "ui.json"
    path.write_text(json.dumps({"nodes": [], "links": []}))
    assert client.main([str(path), "--server", "http://127.0.0.1:9"]) == client.EXIT_USAGE


class FakeServer:
    """Answers /history as a server would: nothing until the prompt has run ``runs_after`` polls."""

    def __init__(self, runs_after):
        self.polls, self.runs_after = 0, runs_after

    def get_json(self, path):
        assert path == "/history/p1"
        self.polls += 1
        if self.polls < self.runs_after:
            return {}
        return {"p1": {"status": {"status_str": "success", "completed": True}, "outputs": {}}}


def test_without_a_websocket_history_is_polled_until_the_prompt_has_run(monkeypatch):
    monkeypatch.setattr(client, "POLL_SECONDS", 0.0)
    server = FakeServer(runs_after=3)
    entry = client.follow(None, server, PROMPT, "p1", deadline=float("inf"))
    assert entry["status"]["completed"] and server.polls == 3


def test_a_prompt_still_running_at_the_deadline_exits_with_code_5(monkeypatch):
    monkeypatch.setattr(client, "POLL_SECONDS", 0.0)
    with pytest.raises(client.ClientError, match="did not finish before --timeout") as err:
        client.follow(None, FakeServer(runs_after=10**9), PROMPT, "p1", deadline=0.0)
    assert err.value.exit_code == client.EXIT_UNREACHABLE


def one_connection_server(answer):
    """A loopback server that reads one HTTP request and sends ``answer(request_headers)``; its port."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        connection, _ = listener.accept()
        with connection, listener:
            request = b""
            while b"\r\n\r\n" not in request:
                request += connection.recv(1024)
            lines = request.decode().split("\r\n")
            headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            connection.sendall(answer(lines[0], headers))

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1]


def test_handshake_then_messages_over_a_real_socket():
    def answer(request_line, headers):
        assert request_line == "GET /ws?clientId=abc HTTP/1.1"
        assert headers["upgrade"] == "websocket" and headers["sec-websocket-version"] == "13"
        key = headers["sec-websocket-key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455's GUID
        accept = base64.b64encode(hashlib.sha1(key.encode()).digest()).decode()
        handshake = (f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode()
        return handshake + server_frame(client.BINARY, b"\x00\x00\x00\x01jpeg") + server_frame(client.TEXT,
                                                                                               b'{"type": "status"}')

    ws = client.WebSocket(f"http://127.0.0.1:{one_connection_server(answer)}/ws?clientId=abc", timeout=10)
    assert ws.receive() == (client.BINARY, b"\x00\x00\x00\x01jpeg")
    assert ws.receive() == (client.TEXT, b'{"type": "status"}')
    ws.close()


def test_a_server_that_does_not_upgrade_is_reported():
    def answer(request_line, headers):
        return b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"

    with pytest.raises(ConnectionError, match="did not open a websocket.*404"):
        client.WebSocket(f"http://127.0.0.1:{one_connection_server(answer)}/ws", timeout=10)
