"""A pipeline's governance built from gateway.yaml, once per run or per streaming
pipeline: the audit trail (gateway.governance.audit), the reference profile of `drift:`,
the review queue of `review:` (gateway.governance.run ties them together)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.governance.profile_build import load_profile
from gateway.governance.run import RunGovernance

if TYPE_CHECKING:
    from gateway.config import GatewayConfig, PipelineConfig
    from gateway.governance.profile import Profile
    from gateway.pipeline import Pipeline
    from gateway.state import StateStore


def reference_of(pipe: PipelineConfig, cfg: GatewayConfig) -> Profile | None:
    """The pipeline's reference profile (`drift.reference`), None without `drift:`."""
    return load_profile(cfg.resolve(pipe.drift.reference)) if pipe.drift is not None else None


def open_decision_log(cfg: GatewayConfig, state: StateStore | None = None) -> Any:
    """The audit trail's decision log of the config (gateway.governance.audit), None when off."""
    from gateway.governance.audit import open_audit

    return open_audit(cfg, state=state)


def build_governance(pipeline: Pipeline, pipe: PipelineConfig, cfg: GatewayConfig, state: StateStore | None, *,
                     run: str, source: str, review_run: str | None = None, audit: Any = None,
                     reference: Profile | None = None, windowed: bool = False) -> RunGovernance:
    """`audit`, `reference`: already open (a batch runtime opens them once for its runs);
    `windowed`: a stream's, judged per `drift.window_records` (a run's: as a whole)."""
    governance = RunGovernance.build(pipeline, run=run, source=source, audit=audit, drift=pipe.drift,
                                     reference=reference if reference is not None else reference_of(pipe, cfg),
                                     monitor=not windowed or pipe.drift is not None)
    governance.store = state
    governance.group_commit = windowed  # a stream: many small micro-batches, committed in groups
    if state is not None:
        governance.attach_review(state, review_run or run)
    return governance


__all__ = ["build_governance", "open_decision_log", "reference_of"]
