"""A failed run is posted to the webhook (through the notification outbox), against a real
local HTTP receiver."""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    DagsterInstance,
    SkipReason,
    build_run_status_sensor_context,
    job,
    op,
)

from ffe_dagster.core.reporting.notifications import UiLinks
from ffe_dagster.resources.registry import ParameterRegistryResource
from ffe_dagster.resources.webhook import WebhookError, WebhookResource
from ffe_dagster.sensors.failure import build_failure_sensor

LINKS = UiLinks(dagster="http://127.0.0.1:3000", mlflow="http://127.0.0.1:5000")

SECRET = "hooks-token-abc123"


class Receiver(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []  # noqa: RUF012 - shared with the test on purpose
    status = 200

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.received.append({"path": self.path, "json": json.loads(body)})
        self.send_response(Receiver.status)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def receiver() -> Iterator[str]:
    Receiver.received = []
    Receiver.status = 200
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/{SECRET}"
    server.shutdown()


@op
def explode() -> None:
    raise ValueError("bars table is locked")


@job(tags={"ffe/trigger": "schedule"})
def doomed_job() -> None:
    explode()


def _failure_context(webhook: WebhookResource, registry: ParameterRegistryResource) -> Any:
    instance = DagsterInstance.ephemeral()
    result = doomed_job.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    return build_run_status_sensor_context(
        sensor_name="run_failure_webhook",
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(),
        resources={"webhook": webhook, "registry": registry},
    ).for_run_failure()


def _registry(tmp_path: Path) -> ParameterRegistryResource:
    return ParameterRegistryResource(url=f"sqlite:///{tmp_path / 'registry.db'}")


def test_a_failed_run_is_posted(receiver: str, tmp_path: Path) -> None:
    sensor = build_failure_sensor(LINKS)
    registry = _registry(tmp_path)
    context = _failure_context(WebhookResource(url=receiver), registry)
    sensor(context)  # type: ignore[call-arg]
    assert len(Receiver.received) == 1
    posted = Receiver.received[0]["json"]
    assert posted["kind"] == "run_failure"
    assert posted["details"]["job"] == "doomed_job"
    assert posted["trigger"] == "schedule"
    assert posted["run_id"] == context.dagster_run.run_id
    assert "explode" in posted["reason"]
    assert [r["status"] for r in registry.outbox().rows()] == ["sent"]
    # the same failure seen again is not posted twice
    sensor(context)  # type: ignore[call-arg]
    assert len(Receiver.received) == 1


def test_no_url_means_the_failure_waits_in_the_outbox(receiver: str, tmp_path: Path) -> None:
    sensor = build_failure_sensor(LINKS)
    registry = _registry(tmp_path)
    out = sensor(_failure_context(WebhookResource(url=""), registry))  # type: ignore[call-arg]
    assert isinstance(out, SkipReason)
    assert Receiver.received == []
    assert [r["status"] for r in registry.outbox().rows()] == ["pending"]


def test_a_refusing_webhook_is_a_clear_error_without_the_secret(receiver: str) -> None:
    Receiver.status = 500
    with pytest.raises(WebhookError, match="HTTP 500") as info:
        WebhookResource(url=receiver).post({"event": "x"})
    assert SECRET not in str(info.value)


def test_an_unreachable_webhook_is_a_clear_error_without_the_secret() -> None:
    with pytest.raises(WebhookError, match="unreachable") as info:
        WebhookResource(url=f"http://127.0.0.1:9/{SECRET}").post({"event": "x"})
    assert SECRET not in str(info.value)
