"""What the commands share: where a pipeline named on the command line lies."""
from __future__ import annotations

from pathlib import Path


DEFAULT_PIPELINE = "pipelines/eyes.yaml"


def pipeline_path(value: str | None) -> Path:
    """A pipeline is a YAML path or a bare name looked up in ./pipelines/."""
    if value is None:
        return Path(DEFAULT_PIPELINE)
    p = Path(value)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    return Path("pipelines") / f"{value}.yaml"
