"""Governance of the gateway's decisions (issue 13): drift and data-quality profiles
(profile), and the append-only audit log of decisions and operator actions (audit)."""
