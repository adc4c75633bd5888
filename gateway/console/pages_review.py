"""Console pages: review (see gateway.console.pages)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
