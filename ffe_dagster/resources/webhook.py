"""The webhook every notification goes to (decisions and failed runs): one HTTP(S) endpoint that
accepts a JSON POST, such as a Slack or Teams incoming webhook.

The URL often carries a token, so it comes from the environment (``FFE_WEBHOOK_URL`` through
``EnvVar``) and never appears in logs, metadata or errors.
"""

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from dagster import ConfigurableResource

WEBHOOK_TIMEOUT_S = 10.0
IDEMPOTENCY_HEADER = "Idempotency-Key"


class WebhookError(RuntimeError):
    """A notification could not be delivered (the URL is never part of the message);
    ``http_status`` is the endpoint's answer when it gave one."""

    def __init__(self, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status


class WebhookResource(ConfigurableResource):
    """Where notifications go. An empty URL switches delivery off (notifications then wait in
    the outbox)."""

    url: str = ""

    @property
    def enabled(self) -> bool:
        """True when a URL is configured."""
        return bool(self.url.strip())

    def post(self, payload: Mapping[str, Any], key: str | None = None) -> int:
        """POST ``payload`` as JSON, with ``key`` as the ``Idempotency-Key`` header when given;
        returns the HTTP status, raises ``WebhookError`` otherwise."""
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers[IDEMPOTENCY_HEADER] = key
        request = urllib.request.Request(
            self.url,
            data=json.dumps(payload, default=str).encode(),
            headers=headers,
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            raise WebhookError(f"webhook answered HTTP {exc.code}", exc.code) from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise WebhookError(f"webhook unreachable: {type(reason).__name__}") from None
