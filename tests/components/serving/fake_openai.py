"""A stand-in for a vLLM server behind the gateway: an OpenAI-compatible /v1/chat/completions
on 127.0.0.1 in its own process (so a test can kill it), answering every request with `--reply`
and usage of two tokens, or with `--garbage`: a 200 whose body is not JSON.

    python -m tests.components.serving.fake_openai --port 9101 --reply champion
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.components.evaluation.judge_server import chat_completion


def _handler(reply: str, garbage: bool) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self._send(200, b"{}")

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if garbage:
                self._send(200, b"\x00garbage, not a completion")
                return
            usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
            answer = chat_completion(body["model"], reply, usage=usage)
            self._send(200, json.dumps(answer).encode())

    return Handler


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(reply: str = "ok", garbage: bool = False) -> tuple[subprocess.Popen, str]:
    """(the process, its base URL …/v1), once it accepts connections."""
    port = free_port()
    cmd = [sys.executable, "-m", __name__, "--port", str(port), "--reply", reply]
    proc = subprocess.Popen(cmd + (["--garbage"] if garbage else []))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"http://127.0.0.1:{port}/v1"
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"the fake OpenAI server on port {port} did not start")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--reply", default="ok")
    ap.add_argument("--garbage", action="store_true")
    args = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), _handler(args.reply, args.garbage))
    server.serve_forever()


if __name__ == "__main__":
    main()
