"""The review web page's server: loopback only, standard library only.

Routes: ``GET /`` (the page), ``GET /api/queue?order=rank|name|score``,
``GET /api/image?name=IMAGE``, ``GET /api/status``, ``POST /api/decide``
``{"image", "label"}``, ``POST /api/decide_many`` ``{"images", "label"}`` and
``POST /api/undo`` ``{"image"}``. Image names are looked up in the run's own list,
never joined to a path, so a request cannot reach any other file.
"""
from __future__ import annotations

import json
import mimetypes
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlparse

from .review import Conflict, ReviewState

_ALLOWED_HOSTS = ("127.0.0.1", "localhost")


def _page() -> bytes:
    return resources.files("pseudolabel").joinpath("static/review.html").read_bytes()


class Handler(BaseHTTPRequestHandler):
    state: ReviewState  # set on the subclass made by make_server
    server_version = "pseudolabel-review"

    def log_message(self, fmt, *args):  # quiet: the terminal shows only the URL and errors
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj) -> None:
        self._send(status, json.dumps(obj).encode())

    def _host_ok(self) -> bool:
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
        if host not in _ALLOWED_HOSTS:
            self._json(HTTPStatus.FORBIDDEN, {"error": f"host {host!r} not allowed"})
            return False
        return True

    def do_GET(self):  # noqa: N802
        if not self._host_ok():
            return
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        try:
            if url.path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, _page(), "text/html; charset=utf-8")
            elif url.path == "/api/queue":
                self._json(HTTPStatus.OK, self.state.queue(q.get("order", "rank")))
            elif url.path == "/api/status":
                self._json(HTTPStatus.OK, self.state.status())
            elif url.path == "/api/image":
                path = self.state.image_path(q.get("name", ""))
                ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                self._send(HTTPStatus.OK, path.read_bytes(), ctype)
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": "no such page"})
        except KeyError as exc:
            self._json(HTTPStatus.NOT_FOUND, {"error": str(exc.args[0])})
        except ValueError as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})

    def do_POST(self):  # noqa: N802
        if not self._host_ok():
            return
        try:
            length = min(int(self.headers.get("Content-Length") or 0), 1 << 20)
            body = json.loads(self.rfile.read(length) or b"{}")
            path = urlparse(self.path).path
            if path == "/api/decide":
                self._json(HTTPStatus.OK, self.state.decide(body.get("image"), str(body.get("label"))))
            elif path == "/api/undo":
                self._json(HTTPStatus.OK, self.state.undo(body.get("image")))
            elif path == "/api/decide_many":
                self._json(HTTPStatus.OK, self._decide_many(body.get("images") or [], str(body.get("label"))))
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": "no such action"})
        except Conflict as exc:
            self._json(HTTPStatus.CONFLICT, {"error": str(exc)})
        except KeyError as exc:
            self._json(HTTPStatus.NOT_FOUND, {"error": str(exc.args[0])})
        except (ValueError, json.JSONDecodeError) as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})

    def _decide_many(self, images: list, label: str) -> dict:
        done, conflicts = [], []
        for image in images[:1000]:
            try:
                done.append(self.state.decide(image, label)["image"])
            except Conflict as exc:
                conflicts.append(str(exc))
        return {"done": done, "conflicts": conflicts}


def make_server(state: ReviewState, port: int = 0) -> ThreadingHTTPServer:
    """A server on 127.0.0.1 (``port`` 0 = any free port); call ``serve_forever``."""
    handler = type("BoundHandler", (Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    return server
