"""Celery app and tasks."""
