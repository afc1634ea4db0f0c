"""Reading one YAML configuration file into its top-level mapping, with the file in every error."""

from pathlib import Path
from typing import Any

import yaml

from ffe_dagster.config.errors import ConfigError


def read_yaml(path: Path) -> dict[str, Any]:
    """The mapping ``path`` holds; ``FileNotFoundError`` naming the file when it is absent, a
    ``ConfigError`` naming it when it is not YAML or not a mapping."""
    try:
        with path.open() as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise FileNotFoundError(f"configuration file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), [f"not valid YAML: {exc}"]) from exc
    if not isinstance(data, dict):
        raise ConfigError(str(path), ["must hold a mapping at the top level"])
    return data
