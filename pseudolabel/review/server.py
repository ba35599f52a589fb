"""The review web page's server: loopback only, standard library only.

Routes: ``GET /`` (the page), ``GET /api/queue?order=rank|name|score&limit=N``, ``GET /api/image?name=IMAGE``,
``GET /api/status``, ``GET /api/history``, ``GET /api/audit``; ``POST /api/decide`` ``{"image",
"label"}``, ``POST /api/decide_many`` ``{"images", "label"}``, ``POST /api/undo`` ``{"image"}`` or
``{"action"}`` and ``POST /api/audit`` ``{"image", "label"}``.

Only our page can act. Each server start makes a random token that is written into the page it
serves; every POST must carry it in the ``X-Pseudolabel-Token`` header, with ``Content-Type:
application/json`` and an ``Origin`` of this server, or it gets 403 and changes nothing. Other
pages cannot read the token (no CORS headers are ever sent, and a custom header forces a preflight
that is refused), nor frame the page. GET requests never change state. Image names are looked up
in the run's own list, never joined to a path. Bodies over :data:`MAX_BODY` get 413, malformed
ones 400; an unexpected fault answers 500 and its traceback goes to ``RUN/review.log`` only.
"""
from __future__ import annotations

import hmac
import json
import mimetypes
import secrets
import time
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlparse

from pseudolabel.review.state import Conflict, ReviewState

_ALLOWED_HOSTS = ("127.0.0.1", "localhost")
MAX_BODY = 1 << 20  # bytes: a larger request body is refused with 413 before it is read
QUEUE_PAGE = 500  # images of the queue one request returns (the page asks again as it goes)


def _limit(text: str | None) -> int:
    """The ``limit`` of a queue request: a whole number in 1..QUEUE_PAGE * 20, QUEUE_PAGE by default."""
    if text is None:
        return QUEUE_PAGE
    if not text.isdigit() or not 1 <= int(text) <= QUEUE_PAGE * 20:
        raise ValueError(f"limit must be a whole number in 1..{QUEUE_PAGE * 20}, got {text[:20]!r}")
    return int(text)


TOKEN_HEADER = "X-Pseudolabel-Token"
LOG = "review.log"  # in the run folder: tracebacks of unexpected faults


class BadRequest(ValueError):
    """A malformed request: 400 (or ``status``)."""

    def __init__(self, msg: str, status: int = HTTPStatus.BAD_REQUEST):
        super().__init__(msg)
        self.status = status


def _page(token: str, mode: str) -> bytes:
    html = resources.files("pseudolabel").joinpath("static/review.html").read_text()
    return html.replace("__TOKEN__", token).replace("__MODE__", mode).encode()


def _field(body: dict, key: str, kind: type):
    value = body.get(key)
    if not isinstance(value, kind):
        raise BadRequest(f"{key!r} must be a {kind.__name__}, got {type(value).__name__}")
    return value


class Handler(BaseHTTPRequestHandler):
    state: ReviewState  # set on the subclass made by make_server
    token: str
    mode: str  # "review" or "audit"
    server_version = "pseudolabel-review"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet: the terminal shows only the URL and errors
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Content-Security-Policy", "default-src 'self'; img-src 'self'; style-src 'unsafe-inline'; "
                         "script-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'none'")  # fmt: skip
        self.send_header("Referrer-Policy", "no-referrer")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj) -> None:
        self._send(status, json.dumps(obj).encode())

    def _host_ok(self) -> bool:
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
        if host not in _ALLOWED_HOSTS:
            self.close_connection = True
            self._json(HTTPStatus.FORBIDDEN, {"error": f"host {host!r} not allowed"})
            return False
        return True

    def _fault(self, exc: BaseException) -> None:
        """An unexpected error: the traceback to RUN/review.log, a short JSON answer to the client."""
        try:
            with open(self.state.run_dir / LOG, "a") as f:
                f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} {self.command} {self.path[:200]}\n")
                f.write("".join(traceback.format_exception(exc)))
        finally:
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR,
                       {"error": f"internal error (logged in {LOG} in the run folder)"})

    def do_GET(self):  # noqa: N802
        try:
            if self._host_ok():
                self._get()
        except Exception as exc:  # noqa: BLE001 - never a traceback to the client
            self._fault(exc)

    def _get(self) -> None:
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        try:
            if url.path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, _page(self.token, self.mode), "text/html; charset=utf-8")
            elif url.path == "/api/queue":
                self._json(HTTPStatus.OK, self.state.queue(q.get("order", "rank"), _limit(q.get("limit"))))
            elif url.path == "/api/status":
                self._json(HTTPStatus.OK, self.state.status())
            elif url.path == "/api/history":
                self._json(HTTPStatus.OK, {"actions": self.state.history()})
            elif url.path == "/api/audit":
                self._json(HTTPStatus.OK, self.state.audit_queue())
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

    def _origin_ok(self) -> bool:
        """Our page's token, JSON, and an Origin of this server: else 403."""
        port = self.server.server_address[1]
        origin = self.headers.get("Origin") or ""
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        token = self.headers.get(TOKEN_HEADER) or ""
        why = ("a missing or wrong session token" if not hmac.compare_digest(token.encode(), self.token.encode())
               else f"origin {origin[:80]!r}" if origin not in (f"http://{h}:{port}" for h in _ALLOWED_HOSTS)
               else "a content type other than application/json" if ctype != "application/json" else "")  # fmt: skip
        if why:
            self.close_connection = True
            self._json(HTTPStatus.FORBIDDEN, {"error": f"refused: {why}; only the review page can act"})
        return not why

    def _body(self) -> dict:
        """The request's JSON object, or BadRequest (400, or 413 when too large)."""
        length = self.headers.get("Content-Length")
        if length is None or not length.strip().isdigit():
            self.close_connection = True
            raise BadRequest("a Content-Length header is required")
        if int(length) > MAX_BODY:
            self.close_connection = True  # the body is never read
            raise BadRequest(f"body of {int(length)} bytes is over the {MAX_BODY}-byte limit",
                             HTTPStatus.REQUEST_ENTITY_TOO_LARGE)  # fmt: skip
        raw = self.rfile.read(int(length))
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise BadRequest(f"body is not JSON: {str(exc)[:100]}") from None
        if not isinstance(body, dict):
            raise BadRequest(f"body must be a JSON object, got {type(body).__name__}")
        return body

    def do_POST(self):  # noqa: N802
        try:
            if self._host_ok() and self._origin_ok():
                self._post()
        except Exception as exc:  # noqa: BLE001 - never a traceback to the client
            self._fault(exc)

    def _post(self) -> None:
        try:
            body = self._body()
            path = urlparse(self.path).path
            s = self.state
            if path == "/api/decide":
                out = s.decide(_field(body, "image", str), _field(body, "label", str))
            elif path == "/api/decide_many":
                out = s.decide_many(_field(body, "images", list), _field(body, "label", str))
            elif path == "/api/undo":
                if "action" in body:
                    out = s.undo(action=_field(body, "action", str))
                else:
                    out = s.undo(_field(body, "image", str))
            elif path == "/api/audit":
                out = s.audit_answer(_field(body, "image", str), _field(body, "label", str))
            else:
                raise BadRequest("no such action", HTTPStatus.NOT_FOUND)
            self._json(HTTPStatus.OK, out)
        except BadRequest as exc:
            self._json(exc.status, {"error": str(exc)})
        except Conflict as exc:
            self._json(HTTPStatus.CONFLICT, {"error": str(exc)})
        except KeyError as exc:
            self._json(HTTPStatus.NOT_FOUND, {"error": str(exc.args[0])})
        except ValueError as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})


def make_server(state: ReviewState, port: int = 0, mode: str = "review") -> ThreadingHTTPServer:
    """A server on 127.0.0.1 (``port`` 0 = any free port) with a fresh session token
    (``server.token``); call ``serve_forever``. ``mode``: "review" (the unclear queue) or "audit"."""
    token = secrets.token_urlsafe(32)
    handler = type("BoundHandler", (Handler,), {"state": state, "token": token, "mode": mode})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    server.token = token
    return server
