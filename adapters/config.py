"""The base of every component's config class (`type:` picks the component)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ComponentConfig(BaseModel):
    """A source, sink or reject sink as `gateway.yaml` describes it; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")
