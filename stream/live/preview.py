"""The live preview (``colorize URL -o OUT --preview HOST:PORT``): a small web page with the colorized
stream as it is produced (MJPEG over HTTP) and the live figures beside it.

Runs inside the ``colorize`` process (threads), off by default, bound to 127.0.0.1 unless another
host is given. The encoder sends JPEGs of the colorized frames over the preview side link
(:mod:`stages.live_links`); this server keeps only the latest one, so a slow viewer never holds the
pipeline back. Paths:

    /               the page: the stream, input/output fps, dropped frames, latency
    /stream.mjpg    multipart/x-mixed-replace JPEG stream (each new frame as it comes)
    /frame.jpg      the latest frame (404 before the first one)
    /figures.json   the live figures, as JSON
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import zmq

from stages.live_links import pull_socket

BOUNDARY = "colorizeframe"
FRAME_WAIT_S = 1.0
MAX_CLIENTS = 16
"""Connections served at once; more get 503 at once, without a thread (viewers must never slow
the run: 1,000 connections had cut the output rate from 10 to 4 fps)."""
IDLE_TIMEOUT_S = 5.0
"""A connection that sends no request, or cannot take a frame, for this long is closed."""
BUSY_REPLY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 22\r\n"
              b"Connection: close\r\n\r\ntoo many viewers, retry\n")


class BoundedHTTPServer(ThreadingHTTPServer):
    """A thread per connection, at most ``MAX_CLIENTS`` at once; the rest are answered 503 and closed."""

    daemon_threads = True
    request_queue_size = 128  # the listen backlog: a burst of connections is answered, not dropped by TCP

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.slots = threading.BoundedSemaphore(MAX_CLIENTS)

    def process_request(self, request, client_address) -> None:
        if not self.slots.acquire(blocking=False):
            try:
                request.settimeout(0.5)
                request.sendall(BUSY_REPLY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>colorize - live preview</title>
<style>
 body { font-family: sans-serif; margin: 1em; background: #111; color: #eee; display: flex; gap: 1.5em; }
 img { max-width: 70vw; background: #000; }
 table { border-collapse: collapse; } td { padding: .2em .8em; } td.v { text-align: right; font-variant-numeric: tabular-nums; }
</style></head>
<body data-frame="none">
<img id="stream" src="/stream.mjpg" alt="colorized stream">
<table id="figures">
 <tr><td>source</td><td class="v" id="source">SOURCE</td></tr>
 <tr><td>frame</td><td class="v" id="frame">waiting</td></tr>
 <tr><td>input fps</td><td class="v" id="input_fps">-</td></tr>
 <tr><td>output fps</td><td class="v" id="output_fps">-</td></tr>
 <tr><td>dropped frames</td><td class="v" id="dropped">-</td></tr>
 <tr><td>latency (ms)</td><td class="v" id="latency_ms">-</td></tr>
 <tr><td>frames written</td><td class="v" id="written">-</td></tr>
 <tr><td>reconnects</td><td class="v" id="reconnects">-</td></tr>
</table>
<script>
const img = document.getElementById("stream");
setInterval(() => {
  if (img.naturalWidth > 0) {
    document.getElementById("frame").textContent = img.naturalWidth + "x" + img.naturalHeight;
    document.body.dataset.frame = img.naturalWidth + "x" + img.naturalHeight;
  }
}, 100);
async function refresh() {
  try {
    const figures = await (await fetch("/figures.json", {cache: "no-store"})).json();
    for (const [key, value] of Object.entries(figures)) {
      const cell = document.getElementById(key);
      if (cell && key !== "source") cell.textContent = value === null ? "-" : value;
    }
  } catch (e) {}
}
setInterval(refresh, 500); refresh();
</script>
</body></html>
"""


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``PORT`` (host 127.0.0.1) → (host, port); raises ValueError with the reason."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]") if sep else "127.0.0.1"
    if not port.isdigit() or int(port) > 65535 or (sep and not host):
        raise ValueError(f"--preview: expected HOST:PORT or PORT (port 0..65535), got '{text}'")
    return host, int(port)


@dataclass
class LatestFrame:
    """The newest JPEG and how many have arrived; ``changed`` is notified on each."""

    jpeg: bytes = b""
    count: int = 0

    def __post_init__(self):
        self.changed = threading.Condition()

    def put(self, jpeg: bytes) -> None:
        with self.changed:
            self.jpeg, self.count = jpeg, self.count + 1
            self.changed.notify_all()

    def wait_newer(self, seen: int, timeout_s: float) -> tuple[bytes, int]:
        with self.changed:
            if self.count <= seen:
                self.changed.wait(timeout_s)
            return self.jpeg, self.count


class PreviewServer:
    """HTTP server (threads) for the preview page; frames arrive on the preview side link ``endpoint``.

    ``figures`` returns the live figures (a JSON-able dict) when the page asks.
    """

    def __init__(self, host: str, port: int, endpoint: str, figures: Callable[[], dict], source: str):
        self.latest = LatestFrame()
        self.stopping = threading.Event()
        self.context = zmq.Context()
        self.link = pull_socket(self.context, endpoint, hwm=2)
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = IDLE_TIMEOUT_S  # applied to the socket: idle reads and stalled writes end

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/":
                    body = PAGE.replace("SOURCE", _escape(source)).encode()
                    self._reply(200, "text/html; charset=utf-8", body)
                elif path == "/figures.json":
                    self._reply(200, "application/json", json.dumps(figures()).encode())
                elif path == "/frame.jpg":
                    jpeg = server.latest.jpeg
                    self._reply(200, "image/jpeg", jpeg) if jpeg else self._reply(404, "text/plain", b"no frame yet\n")
                elif path == "/stream.mjpg":
                    self._stream()
                else:
                    self._reply(404, "text/plain", b"not found\n")

            def _reply(self, code: int, kind: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def _stream(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                seen = 0
                try:
                    while not server.stopping.is_set():
                        jpeg, count = server.latest.wait_newer(seen, FRAME_WAIT_S)
                        if count == seen or not jpeg:
                            continue
                        seen = count
                        self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                         f"Content-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n")
                        self.wfile.flush()
                except OSError:  # gone, reset, or too slow to take a frame (IDLE_TIMEOUT_S)
                    pass

        self.http = BoundedHTTPServer((host, port), Handler)
        self.address = self.http.server_address[:2]
        self.threads = [threading.Thread(target=self.http.serve_forever, name="preview-http", daemon=True),
                        threading.Thread(target=self._receive, name="preview-frames", daemon=True)]

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}/"

    def start(self) -> "PreviewServer":
        for thread in self.threads:
            thread.start()
        return self

    def _receive(self) -> None:
        while not self.stopping.is_set():
            if self.link.poll(100):
                self.latest.put(self.link.recv())

    def stop(self) -> None:
        self.stopping.set()
        self.http.shutdown()
        self.http.server_close()
        for thread in self.threads:
            thread.join(2.0)
        self.link.close(linger=0)
        self.context.term()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
