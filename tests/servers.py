"""Real local servers for backend tests: a vLLM OpenAI-compatible server, and a scripted misbehaving endpoint.

Both bind 127.0.0.1 only. ``VLLMServer`` runs ``python -m vllm.entrypoints.openai.api_server`` in its own process
group (so stopping it also ends vLLM's engine-core child). ``FakeServer`` is a tiny ``http.server`` that speaks just
enough of the OpenAI API and answers from a script (garbage, 500, 429, dropped connections, then OK), recording every
request it gets (headers included) so tests can check what a client sent.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

# The KV cache of a test engine or server on a tiny model (1 KiB a token: 64k tokens). The CPU default of the tests
# (VLLM_CPU_KVCACHE_SPACE=1) held 1 GiB resident in each, and the suite's memory peaked at the machine's 24 GB.
TEST_KV_BYTES = 64 << 20


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VLLMServer:
    """A real vLLM OpenAI-compatible server on 127.0.0.1 in a subprocess; can be stopped and restarted on its port."""

    def __init__(
        self,
        model_dir: str | Path,
        name: str = "tiny",
        *,
        port: int | None = None,
        max_model_len: int = 1024,
        extra_args: Iterable[str] = (),
        log_dir: str | Path | None = None,
    ) -> None:
        """Set the model, served name, port (a free one by default) and log directory; nothing starts yet."""
        self.model_dir, self.name, self.port = str(model_dir), name, port or free_port()
        self.max_model_len, self.extra_args = max_model_len, list(extra_args)
        self.proc: subprocess.Popen | None = None
        self.log_path = Path(tempfile.mkstemp(prefix=f"vllm-{self.port}-", suffix=".log", dir=log_dir)[1])
        self.start_seconds: list[float] = []

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 300.0) -> VLLMServer:
        """Start the server and wait (at most ``timeout`` s) until ``/health`` answers 200."""
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model_dir,
               "--host", "127.0.0.1", "--port", str(self.port), "--dtype", "float32",
               "--max-model-len", str(self.max_model_len), "--enforce-eager", "--served-model-name", self.name,
               "--disable-uvicorn-access-log", "--kv-cache-memory-bytes", str(TEST_KV_BYTES),
               *self.extra_args]  # fmt: skip
        # The variable would win over --kv-cache-memory-bytes (and hold 1 GiB a server instead of 64 MiB). Without
        # multiprocessing the engine-core process runs the model itself: no worker process (one vLLM import, ~8 s of
        # CPU, and ~0.6 GB fewer a start); the tests' client sees the same server.
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}  # fmt: skip
        env.pop("VLLM_CPU_KVCACHE_SPACE", None)
        began = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = began + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    self.start_seconds.append(time.monotonic() - began)
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop(kill=True)
        raise RuntimeError(f"vLLM server not healthy after {timeout:g} s:\n{self.log_tail()}")

    def stop(self, kill: bool = False, timeout: float = 30.0) -> None:
        """Stop the server and its children: SIGTERM (or SIGKILL with ``kill``), then SIGKILL after ``timeout``."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        self._signal(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._signal(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
        self._signal(proc.pid, signal.SIGKILL)  # stragglers of the group (the engine core), if any

    def restart(self, timeout: float = 300.0) -> VLLMServer:
        """Stop the server and start it again on the same port."""
        self.stop()
        return self.start(timeout)

    @staticmethod
    def _signal(pgid: int, sig: int) -> None:
        """Signal the server's process group (it has its own session); a group already gone is fine."""
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server's log, for failure messages."""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> VLLMServer:
        """Start the server."""
        return self.start()

    def __exit__(self, *exc: object) -> None:
        """Stop the server."""
        self.stop()


class _Server(ThreadingHTTPServer):
    # socketserver listens with a backlog of 5: sixteen clients connecting at once overflow it, a dropped SYN is
    # retried by the kernel after 1 s and then 3 s, and a client with a short timeout counts a retry in a clean run.
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away mid-answer (a test interrupted it) is expected. socketserver would print the
        # traceback to sys.stderr from this server's thread, into whatever in-process CLI run is capturing it then.
        pass


class FakeServer:
    """A real HTTP server on 127.0.0.1 that answers OpenAI API calls from a script, then with ``default``.

    Script items apply to every request in arrival order: ``"ok"``, ``"garbage"`` (200, not JSON), ``"empty"``
    (200 JSON without choices), ``"drop"`` (close the connection unanswered), or an HTTP status such as 429, 500.
    ``/tokenize`` answers 404 (not vLLM), so forced verdicts take the chat-prefill path and get ``top_logprobs``.
    """

    def __init__(
        self,
        script: Iterable[str | int] = (),
        *,
        default: str | int = "ok",
        model: str = "fake",
        content: str = "I compared them.\n<answer>[[A]]</answer>",
        finish_reason: str = "stop",
        top_logprobs: Iterable[tuple[str, float]] = (("A", -0.5), ("B", -1.5)),
        delay: float = 0.0,
        root: str | None = None,
        choice_logprobs: tuple[float, float] = (-0.5, -1.5),
    ) -> None:
        """Set the script and the canned answers; start with ``start()`` or ``with``.

        ``root``: the model path ``/v1/models`` reports (as vLLM does), where tourney may find the tokenizer;
        ``choice_logprobs``: what ``/v1/completions`` gives the two ``logprob_token_ids`` asked for.
        """
        self.script, self.default, self.model = list(script), default, model
        self.root, self.choice_logprobs = root, choice_logprobs
        self.content, self.finish_reason, self.top_logprobs = content, finish_reason, list(top_logprobs)
        self.delay = delay
        self.seen: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """The server's base URL (still known after it stopped)."""
        return f"http://127.0.0.1:{self.port}"

    def calls(self, path: str) -> list[dict[str, Any]]:
        """The recorded requests to ``path``."""
        with self._lock:
            return [r for r in self.seen if r["path"] == path]

    def start(self) -> FakeServer:
        """Serve on a free port in a daemon thread."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like real servers

            def do_GET(self) -> None:
                fake._handle(self)

            def do_POST(self) -> None:
                fake._handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-openai", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeServer:
        """Start the server."""
        return self.start()

    def __exit__(self, *exc: object) -> None:
        """Stop the server."""
        self.stop()

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        """Record the request and answer by the script."""
        size = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(size) if size else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self._lock:
            self.seen.append({"method": h.command, "path": h.path, "headers": dict(h.headers), "body": body})
            action = self.script.pop(0) if self.script else self.default
        if self.delay:
            time.sleep(self.delay)
        if action == "drop":
            h.close_connection = True
            return
        if isinstance(action, int):
            error = {"error": {"message": f"scripted {action}", "type": "x", "code": action}}
            return self._send(h, action, error, {"Retry-After": "0"} if action == 429 else {})
        if action == "garbage":
            return self._send(h, 200, b"<html>I am not an API</html>")
        if action == "empty":
            return self._send(h, 200, {"object": "chat.completion", "choices": []})
        if h.path == "/v1/models":
            entry = {"id": self.model, "object": "model", **({"root": self.root} if self.root else {})}
            return self._send(h, 200, {"object": "list", "data": [entry]})
        if h.path == "/v1/completions" and isinstance(body, dict):
            return self._send(h, 200, self._scored(body))
        if h.path == "/tokenize":
            return self._send(h, 404, {"detail": "Not Found"})
        if h.path != "/v1/chat/completions" or not isinstance(body, dict):
            return self._send(h, 404, {"detail": "Not Found"})
        if body.get("model") != self.model:
            message = f"The model `{body.get('model')}` does not exist."
            return self._send(h, 404, {"error": {"message": message, "type": "NotFoundError", "code": 404}})
        self._send(h, 200, self._completion(body))

    def _completion(self, body: dict[str, Any]) -> dict[str, Any]:
        """A chat completion: the canned content, or one token with top log-probs for a prefilled assistant turn."""
        prefill = bool(body.get("continue_final_message"))
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": "A" if prefill else self.content},
            "finish_reason": "length" if prefill else self.finish_reason,
            "logprobs": None,
        }
        if prefill:
            top = [{"token": t, "logprob": lp} for t, lp in self.top_logprobs]
            choice["logprobs"] = {"content": [{"token": "A", "logprob": -0.5, "top_logprobs": top}]}
        completion = 1 if prefill else len(self.content.split())
        usage = {"prompt_tokens": 100, "completion_tokens": completion, "total_tokens": 100 + completion}
        return {"id": "fake", "object": "chat.completion", "model": self.model, "choices": [choice], "usage": usage}

    def _scored(self, body: dict[str, Any]) -> dict[str, Any]:
        """A one-token completion with the raw log-probs of the asked ``logprob_token_ids`` (vLLM's form)."""
        ids = body.get("logprob_token_ids") or []
        top = {f"token_id:{t}": lp for t, lp in zip(ids, self.choice_logprobs)}
        prompt = body.get("prompt")
        n = len(prompt) if isinstance(prompt, list) else 100
        choice = {"index": 0, "text": "x", "finish_reason": "length", "logprobs": {"top_logprobs": [top]}}
        usage = {"prompt_tokens": n, "completion_tokens": 1, "total_tokens": n + 1}
        return {"id": "fake", "object": "text_completion", "model": self.model, "choices": [choice], "usage": usage}

    @staticmethod
    def _send(
        h: BaseHTTPRequestHandler, status: int, payload: dict[str, Any] | bytes, headers: dict[str, str] | None = None
    ) -> None:
        """Write one complete HTTP response."""
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        h.send_response(status)
        for name, value in (headers or {}).items():
            h.send_header(name, value)
        h.send_header("Content-Type", "application/json" if isinstance(payload, dict) else "text/html")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)


# ---- one tiny thinking-template model, shared by every test module of a session (its engine and server: conftest) --


def tiny_thinking_model() -> Path:
    """The tiny random model with an R1-distill-style template (``tourney.testing.THINKING_TEMPLATE``), built once
    per session into the session's cache folder, so every module that uses it gets the same directory."""
    from tourney.testing import THINKING_TEMPLATE, build_tiny_model

    out = Path(os.environ["TOURNEY_CACHE_DIR"]) / "tiny-thinking"
    if not (out / "tokenizer_config.json").is_file():
        build_tiny_model(out, chat_template=THINKING_TEMPLATE)
    return out
