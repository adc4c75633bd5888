"""Console pages: overview (see gateway.console.pages)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
