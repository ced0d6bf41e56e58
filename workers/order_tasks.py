"""Celery tasks for orders (payment -> print files -> print-on-demand -> shipped)."""
from __future__ import annotations
