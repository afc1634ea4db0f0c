"""``make mlflow`` prints these links before it starts the UI: each experiment's runs view.

MLflow 3's UI opens an experiment on its GenAI overview unless the URL (or the browser's stored
choice) says otherwise, whatever the experiment's tags say (see the README's MLflow section), so
the links carry ``workflowType=machine_learning`` and open on the runs table.
"""

import argparse
import sys
from collections.abc import Sequence

from mlflow.tracking import MlflowClient


def runs_view_url(base_url: str, experiment_id: str) -> str:
    """The MLflow UI address of one experiment's runs table."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}?workflowType=machine_learning"


def experiment_links(tracking_uri: str, base_url: str) -> list[str]:
    """One line per experiment in the store (name, then its runs-view link), by name."""
    client = MlflowClient(tracking_uri=tracking_uri)
    experiments = sorted(client.search_experiments(), key=lambda e: e.name)
    return [
        f"  {e.name}: {runs_view_url(base_url, e.experiment_id)}"
        for e in experiments
        if e.name != "Default"
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Print the runs-view links of every experiment in ``--tracking-uri``."""
    parser = argparse.ArgumentParser(prog="python -m ffe_dagster.mlflow_links")
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--url", default="http://127.0.0.1:5000")
    args = parser.parse_args(argv)
    lines = experiment_links(args.tracking_uri, args.url)
    if lines:
        print("MLflow runs views (open these; the plain URL opens MLflow's GenAI overview):")
        print("\n".join(lines))
    else:
        print("MLflow: no experiment yet (run `make run` first)")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
