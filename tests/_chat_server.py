"""A real HTTP server that speaks just enough of two chat protocols to test model providers.

``POST /v1/chat/completions`` answers in the OpenAI chat-completions shape and
``POST /v1/messages`` in the Anthropic messages shape. What it answers is scripted: tests queue
protocol-neutral behaviours (:func:`ok`, :func:`status`, :func:`slow`, :func:`raw`), each
request takes the next one, and the server renders it for the path it was sent to. Every request
is recorded (path, headers, parsed body, arrival time on the monotonic clock) so a test can
assert on what the client sent and on the gaps between retries.

The server listens on 127.0.0.1 on a free port in a background thread; :func:`serve` starts it
and stops it, waking any request still sleeping in :func:`slow` so shutdown is prompt.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

__all__ = [
    "ChatServer",
    "Ok",
    "Raw",
    "Recorded",
    "Slow",
    "Status",
    "ToolUse",
    "ok",
    "raw",
    "serve",
    "slow",
    "status",
]

OPENAI_PATH = "/v1/chat/completions"
ANTHROPIC_PATH = "/v1/messages"

Finish = Literal["stop", "length", "tool_calls"]

# How each protocol spells the neutral finish reasons.
_ANTHROPIC_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


@dataclass(frozen=True)
class ToolUse:
    id: str
    name: str
    arguments: Mapping[str, Any]


@dataclass(frozen=True)
class Ok:
    """A successful completion: text and/or tool calls, with usage."""

    text: str | None = "ok"
    tool_calls: tuple[ToolUse, ...] = ()
    prompt_tokens: int = 11
    completion_tokens: int = 7
    finish: Finish = "stop"
    model: str = "served-model-2026-01-01"


@dataclass(frozen=True)
class Status:
    """An error status with a protocol-shaped error body and optional extra headers."""

    code: int
    headers: Mapping[str, str] = field(default_factory=dict)
    message: str = "scripted error"


@dataclass(frozen=True)
class Slow:
    """Wait ``seconds`` (longer than the client's timeout) before answering ``then``."""

    seconds: float
    then: Ok = field(default_factory=Ok)


@dataclass(frozen=True)
class Raw:
    """Exactly these bytes with status 200: for bodies that are not what the protocol says."""

    body: bytes
    content_type: str = "application/json"


Behaviour = Ok | Status | Slow | Raw


def ok(
    text: str | None = "ok",
    *,
    tool_calls: tuple[ToolUse, ...] = (),
    prompt_tokens: int = 11,
    completion_tokens: int = 7,
    finish: Finish = "stop",
    model: str = "served-model-2026-01-01",
) -> Ok:
    return Ok(text, tool_calls, prompt_tokens, completion_tokens, finish, model)


def status(
    code: int,
    *,
    retry_after: str | None = None,
    retry_after_ms: str | None = None,
    message: str = "scripted error",
) -> Status:
    headers: dict[str, str] = {}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    if retry_after_ms is not None:
        headers["retry-after-ms"] = retry_after_ms
    return Status(code, headers, message)


def slow(seconds: float, then: Ok | None = None) -> Slow:
    return Slow(seconds, then or Ok())


def raw(body: str | bytes, *, content_type: str = "application/json") -> Raw:
    return Raw(body.encode() if isinstance(body, str) else body, content_type)


@dataclass(frozen=True)
class Recorded:
    """One request as the server received it. ``headers`` keys are lower-case."""

    path: str
    headers: Mapping[str, str]
    body: Any
    at: float


def _render_openai(reply: Ok) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text}
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(dict(call.arguments))},
            }
            for call in reply.tool_calls
        ]
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": 1_767_225_600,
        "model": reply.model,
        "choices": [{"index": 0, "message": message, "finish_reason": reply.finish}],
        "usage": {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        },
    }


def _render_anthropic(reply: Ok) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if reply.text is not None:
        content.append({"type": "text", "text": reply.text})
    content.extend(
        {"type": "tool_use", "id": call.id, "name": call.name, "input": dict(call.arguments)}
        for call in reply.tool_calls
    )
    return {
        "id": "msg_scripted",
        "type": "message",
        "role": "assistant",
        "model": reply.model,
        "content": content,
        "stop_reason": _ANTHROPIC_STOP[reply.finish],
        "stop_sequence": None,
        "usage": {"input_tokens": reply.prompt_tokens, "output_tokens": reply.completion_tokens},
    }


def _render_error(path: str, reply: Status) -> dict[str, Any]:
    if path == ANTHROPIC_PATH:
        return {"type": "error", "error": {"type": "api_error", "message": reply.message}}
    return {"error": {"message": reply.message, "type": "server_error", "code": None}}


class ChatServer(ThreadingHTTPServer):
    """The server; tests use :meth:`script`, :attr:`requests` and :attr:`base_url`."""

    # Handler threads are joined on close (they wake early from ``slow``), so none outlive a test.
    daemon_threads = False
    block_on_close = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self._lock = threading.Lock()
        self._queue: deque[Behaviour] = deque()
        self._requests: list[Recorded] = []
        self.stopping = threading.Event()
        self.fallback: Behaviour = Ok(text="unscripted")

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def script(self, *behaviours: Behaviour) -> None:
        """Queue behaviours; each request takes the next, then :attr:`fallback` once empty."""
        with self._lock:
            self._queue.extend(behaviours)

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._requests)

    def gaps(self) -> list[float]:
        """Seconds between consecutive requests' arrivals."""
        times = [r.at for r in self.requests]
        return [b - a for a, b in itertools.pairwise(times)]

    def take(self, recorded: Recorded) -> Behaviour:
        with self._lock:
            self._requests.append(recorded)
            return self._queue.popleft() if self._queue else self.fallback

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and hung up is an expected part of the script, not noise.
        pass


class _Handler(BaseHTTPRequestHandler):
    server: ChatServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length)
        try:
            body = json.loads(data) if data else None
        except ValueError:
            body = None
        recorded = Recorded(
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            at=time.monotonic(),
        )
        behaviour = self.server.take(recorded)
        if self.path not in (OPENAI_PATH, ANTHROPIC_PATH):
            self._send(404, {"error": {"message": f"no route for {self.path}"}})
            return
        if isinstance(behaviour, Slow):
            if self.server.stopping.wait(behaviour.seconds):
                return
            behaviour = behaviour.then
        if isinstance(behaviour, Ok):
            render = _render_anthropic if self.path == ANTHROPIC_PATH else _render_openai
            self._send(200, render(behaviour))
        elif isinstance(behaviour, Status):
            self._send(behaviour.code, _render_error(self.path, behaviour), behaviour.headers)
        else:
            self._write(200, behaviour.body, behaviour.content_type, {})

    def _send(self, code: int, payload: object, headers: Mapping[str, str] | None = None) -> None:
        self._write(code, json.dumps(payload).encode(), "application/json", headers or {})

    def _write(self, code: int, body: bytes, content_type: str, headers: Mapping[str, str]) -> None:
        try:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test); nothing left to tell it


@contextmanager
def serve() -> Iterator[ChatServer]:
    """Run a :class:`ChatServer` in a background thread for the duration of the block."""
    server = ChatServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        thread.join()
        server.server_close()
