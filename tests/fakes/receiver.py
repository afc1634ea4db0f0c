"""A real HTTP server on a free local port that receives webhook POSTs, for the notification
tests: it can be down (nothing listens), refuse (any HTTP status) or accept."""

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

SECRET = "hooks-token-abc123"  # stands for the token a Slack / Teams webhook path carries


@dataclass
class Received:
    path: str
    key: str | None
    json: dict[str, Any]
    status: int  # what the receiver answered


@dataclass
class WebhookReceiver:
    """``url`` keeps its port across ``stop`` / ``start``, so an endpoint can go down and
    come back; ``status`` is what it answers."""

    status: int = 200
    received: list[Received] = field(default_factory=list)
    port: int = 0
    _server: HTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{SECRET}"

    def start(self) -> "WebhookReceiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append(
                    Received(
                        self.path,
                        self.headers.get("Idempotency-Key"),
                        json.loads(body),
                        receiver.status,
                    )
                )
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = HTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_port
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def accepted(self) -> list[Received]:
        """What arrived while the receiver answered 2xx (a refused POST does not count)."""
        return [r for r in self.received if r.status < 300]
