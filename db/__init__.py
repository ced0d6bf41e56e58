"""Postgres access: typed models, one engine per process, guarded status transitions."""
