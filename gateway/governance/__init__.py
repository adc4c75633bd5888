"""Governance of the gateway's decisions (issue 13): drift and data-quality profiles so far."""
