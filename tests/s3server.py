"""Real object-storage servers for the tests, on 127.0.0.1, started as processes and stopped
by their PIDs: moto's standalone S3 server and a Google Cloud Storage emulator; and an HTTP
proxy in front of S3 that can fail a share of the requests (seeded) or run a hook before the
n-th request (e.g. delete the bucket mid-query)."""

from __future__ import annotations

import http.client
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "content-length"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def moto_server(port: int | None = None) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a moto S3 server that lives as long as the block."""
    port = port or free_port()
    moto = Path(sys.executable).parent / "moto_server"
    with _process([str(moto), "-H", "127.0.0.1", "-p", str(port)], port) as url:
        yield url


@contextmanager
def gcs_server(port: int | None = None) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a Google Cloud Storage emulator (gcp-storage-emulator,
    in memory) that lives as long as the block."""
    port = port or free_port()
    exe = Path(sys.executable).parent / "gcp-storage-emulator"
    argv = [str(exe), "start", "--host", "127.0.0.1", "--port", str(port), "-q", "-M"]
    with _process(argv, port) as url:
        yield url


@contextmanager
def _process(argv: list[str], port: int) -> Iterator[str]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"{argv[0]} exited with {proc.returncode}") from None
                time.sleep(0.1)
        else:
            raise RuntimeError(f"{argv[0]} did not start in 30 s")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Proxy:
    """Forwards to ``upstream``; fails ``fail_share`` of requests (half with a 503, half by
    closing the connection unanswered); runs ``hook`` once, before the ``hook_at``-th GET."""

    def __init__(self, upstream: str, *, fail_share: float = 0.0, seed: int = 0) -> None:
        self.host, _, port = upstream.removeprefix("http://").partition(":")
        self.port = int(port)
        self.fail_share = fail_share
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.requests = self.failed = self.gets = self.sent = 0  # sent: GET body bytes
        self.hook: Callable[[], None] | None = None
        self.hook_at = 0

    def decide(self, method: str) -> str:
        with self.lock:
            self.requests += 1
            if method == "GET":
                self.gets += 1
                if self.hook is not None and self.gets >= self.hook_at:
                    hook, self.hook = self.hook, None
                    hook()
            if self.rng.random() < self.fail_share:
                self.failed += 1
                return "503" if self.rng.random() < 0.5 else "drop"
            return "pass"

    @contextmanager
    def serving(self) -> Iterator[str]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                what = proxy.decide(self.command)
                if what == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if what == "503":
                    msg = b"<Error><Code>SlowDown</Code><Message>injected</Message></Error>"
                    self.send_response(503)
                    self.send_header("Content-Length", str(len(msg)))
                    self.end_headers()
                    self.wfile.write(msg)
                    return
                up = http.client.HTTPConnection(proxy.host, proxy.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
                up.request(self.command, self.path, body=body or None, headers=headers)
                resp = up.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in HOP:
                        self.send_header(k, v)
                length = resp.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                    with proxy.lock:
                        proxy.sent += len(data)
                up.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

            def handle_one_request(self) -> None:
                try:
                    super().handle_one_request()
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up on a dropped request

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()
