"""``make dashboard``: optuna-dashboard started on a free port over a journal storage holding two
level studies (written by the project's own ``run_study``), read back through its HTTP API."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import optuna

from ffe_dagster.config import load_curriculum
from ffe_dagster.config.settings import PACKAGE_DIR, PROJECT_DIR
from ffe_dagster.core.backtest.metrics import Metrics
from ffe_dagster.core.study.optimize import StudyConfig, run_study
from ffe_dagster.dashboard import shown_url
from ffe_dagster.resources.optuna_storage import open_storage

TRIALS = {1: 5, 2: 3}
START_TIMEOUT_S = 180  # the dashboard imports optuna and plotly; slow on a loaded machine


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _evaluate(batch: Any) -> list[Metrics]:
    return [
        Metrics(
            sharpe=float(i),
            sortino=0.0,
            max_drawdown_pct=5.0,
            win_rate_pct=50.0,
            profit_factor=1.0,
            total_return_pct=0.0,
            n_trades=50,
            avg_trade_bars=1.0,
            exposure_pct=0.0,
        )
        for i, _ in enumerate(batch)
    ]


def test_the_dashboard_serves_the_level_studies(tmp_path: Path) -> None:
    url = f"journal:///{tmp_path / 'studies.journal'}"
    curriculum = load_curriculum(PACKAGE_DIR / "config" / "curriculum.yaml")
    storage = open_storage(url)
    names = {}
    for spec in curriculum.levels[:2]:
        names[spec.level] = f"{spec.asset}-dashboardtest"
        run_study(
            _evaluate,
            curriculum.parameters,
            StudyConfig(
                study_name=names[spec.level],
                storage=storage,
                n_trials=TRIALS[spec.level],
                seed=curriculum.seed,
                constraints=curriculum.constraints,
            ),
        )
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "ffe_dagster.dashboard", "--port", str(port)],
        env={**os.environ, "FFE_STUDIES_URL": url, "FFE_VAR_DIR": str(tmp_path / "var")},
        cwd=PROJECT_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                listing = _get(f"http://127.0.0.1:{port}/api/studies")
                break
            except OSError:
                assert server.poll() is None, server.communicate()[0].decode()[-2000:]
                assert time.monotonic() < deadline, "the dashboard never answered"
                time.sleep(0.5)
        studies = {s["study_name"]: s for s in listing["study_summaries"]}
        assert set(studies) == set(names.values())
        for level, name in names.items():
            detail = _get(f"http://127.0.0.1:{port}/api/studies/{studies[name]['study_id']}")
            assert [t["state"] for t in detail["trials"]] == ["Complete"] * TRIALS[level]
            assert len(detail["directions"]) == 3  # Sharpe, win rate, drawdown
            stored = optuna.load_study(study_name=name, storage=storage).trials
            assert [t["params"] for t in detail["trials"]] and len(stored) == TRIALS[level]
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            # Seen once under parallel tests: the server ignored SIGTERM for 30 s.
            server.kill()
            server.wait(timeout=30)


def test_the_printed_url_hides_the_password() -> None:
    shown = shown_url("postgresql+psycopg2://ffe:s3cret@db.internal:5432/ffe")
    assert "s3cret" not in shown and "db.internal:5432/ffe" in shown
    assert shown_url("journal:///tmp/x.journal") == "journal:///tmp/x.journal"
