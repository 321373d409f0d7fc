"""A tiny OpenAI-compatible chat endpoint for judge tests: a real HTTP server on 127.0.0.1 in a
thread, answering /v1/chat/completions with whatever its `reply` function says (a string; an
int: that HTTP status; a float: seconds to stall before answering "A")."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Reply = Callable[[str, str, str], str | int | float]  # (prompt, answer A, answer B) -> reply

_ASKED = re.compile(r"Prompt:\n(.*)\n\nAnswer A:\n(.*)\n\nAnswer B:\n(.*)\n\nBetter answer:", re.S)


def chat_completion(model: str, content: str, **extra) -> dict:
    """An OpenAI chat.completion answer with one choice (`extra`: e.g. `usage`)."""
    return {
        "id": "cmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        **extra,
    }


def _handler(reply: Reply, seen: list[dict] | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if seen is not None:
                seen.append(body)
            match = _ASKED.search(body["messages"][-1]["content"])
            answer = reply(*match.groups()) if match else "?"
            if isinstance(answer, float):
                time.sleep(answer)
                answer = "A"
            if isinstance(answer, int):
                self.send_response(answer)
                self.end_headers()
                self.wfile.write(b'{"error": {"message": "judge overloaded"}}')
                return
            data = json.dumps(chat_completion(body["model"], answer)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


@contextmanager
def judge_endpoint(reply: Reply, seen: list[dict] | None = None) -> Iterator[str]:
    """The base URL (…/v1) of a server answering with `reply` while the block runs; each
    request's JSON body is appended to `seen`."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(reply, seen))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
