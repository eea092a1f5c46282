"""Servers the remote-input tests start on 127.0.0.1: an S3-compatible store (moto) and a static HTTP server."""

from __future__ import annotations

import functools
import http.server
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
          "AWS_MAX_ATTEMPTS": "1"}


@contextmanager
def s3_server(port: int = 0) -> Iterator[Any]:
    """Run moto's S3 server on 127.0.0.1 and point boto (s3fs) at it through AWS_ENDPOINT_URL; yield the server.

    ``server.endpoint`` is its URL; ``server.stop()`` stops it early (a server that dies mid-scan).
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    host, bound = server.get_host_and_port()
    endpoint = f"http://{host}:{bound}"
    server.endpoint = endpoint
    saved = {name: os.environ.get(name) for name in (*S3_ENV, "AWS_ENDPOINT_URL")}
    os.environ.update({**S3_ENV, "AWS_ENDPOINT_URL": endpoint})
    _forget_filesystems()
    try:
        yield server
    finally:
        if server._server is not None:
            server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _forget_filesystems()


def _forget_filesystems() -> None:
    """Drop fsspec's cached S3 clients, which hold the endpoint they were made with."""
    import fsspec

    fsspec.filesystem("s3").clear_instance_cache()


def upload(folder: Path, bucket_url: str) -> None:
    """Copy every file under ``folder`` to ``bucket_url`` (created), keeping relative names."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(bucket_url)
    bucket = root.split("/", 1)[0]
    if not fs.exists(bucket):
        fs.mkdir(bucket)
    for file in sorted(folder.rglob("*")):
        if file.is_file() and not file.is_symlink():
            fs.pipe(f"{root}/{file.relative_to(folder).as_posix()}", file.read_bytes())
    fs.invalidate_cache()


@contextmanager
def http_server(folder: Path) -> Iterator[str]:
    """Serve ``folder`` over HTTP on 127.0.0.1; yield the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def trickle_server(*, interval: float = 0.2, limit: float = 6.0, size: int | None = None) -> Iterator[str]:
    """Serve every GET as an answer that trickles one byte every ``interval`` seconds; yield the base URL.

    A stalled server that never goes idle long enough for a read timeout. Each answer ends after ``limit``
    seconds (so a client without a deadline finishes, late). A HEAD states ``size`` bytes and byte ranges
    when ``size`` is given (a shard's server), nothing otherwise.
    """
    stop = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # no Content-Length: the body ends when the connection closes

        def do_HEAD(self) -> None:
            self.send_response(200)
            if size is not None:
                self.send_header("Content-Length", str(size))
                self.send_header("Accept-Ranges", "bytes")
            self.end_headers()

        def do_GET(self) -> None:
            self.send_response(206 if size is not None and "Range" in self.headers else 200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            ends = time.monotonic() + limit
            try:
                while time.monotonic() < ends and not stop.wait(interval):
                    self.wfile.write(b"<")
                    self.wfile.flush()
            except OSError:  # the client gave up
                pass

        def log_message(self, format: str, *args: object) -> None:
            """Keep the test output clean."""

    with _serving(Handler) as base:
        try:
            yield base
        finally:
            stop.set()


@contextmanager
def flood_server(total: int, *, chunk: int = 64 * 1024) -> Iterator[str]:
    """Serve every GET as ``total`` bytes sent in ``chunk``-byte pieces, with no Content-Length; yield the base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            piece = b"<" * chunk
            try:
                for _ in range(total // chunk):
                    self.wfile.write(piece)
            except OSError:  # the client stopped reading
                pass

        def log_message(self, format: str, *args: object) -> None:
            """Keep the test output clean."""

    with _serving(Handler) as base:
        yield base


@contextmanager
def _serving(handler: Any) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output clean."""
