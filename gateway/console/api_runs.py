"""Admin API: runs endpoints (included by gateway.console.api)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
