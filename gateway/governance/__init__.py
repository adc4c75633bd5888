"""Governance of the gateway's decisions (issue 13), beside the drivers that move the data.

    pii.py            the pii policy (clear | mask | hash | drop) on columns, record bytes, messages
    decisions.py      one audit record per scored record, built column-wise (keyed input fingerprints)
    audit*.py         the append-only audit log: Parquet days or state-store tables, hash chains,
                      verify, retention, operator actions (audit_cli: lgw audit verify|show|prune)
    identity.py       who an operator is, as the operating system authenticated them
    profile*.py       reference profiles and PSI (profile_cli: lgw profile build|show)
    monitor.py        a run's or window's drift and quality counters, thresholds, the verdict
    review*.py        the human review queue, its CLI and the corrections through the sink
    run.py            one run's governance: what the drivers call per batch and at the end
    wiring.py         a pipeline's governance built from gateway.yaml
    report*.py        the run's self-contained HTML report (charts.py: its inline SVG)
"""
