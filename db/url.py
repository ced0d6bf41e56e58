"""The one place a configured database URL becomes the URL every engine is built from.

People write PostgreSQL URLs in several forms, and SQLAlchemy reads the driver from the URL's
scheme: since SQLAlchemy 2.1 a plain ``postgresql://`` means psycopg 3 ("Default PostgreSQL driver
changed to psycopg (psycopg 3)", https://docs.sqlalchemy.org/en/21/changelog/migration_21.html),
which this project does not ship, and ``postgres://`` (what Heroku-style platforms give) has not
been a dialect name since SQLAlchemy 1.4. So every form we accept is rewritten here to the driver
we do ship and pin (psycopg2, pyproject.toml), whatever SQLAlchemy's default is:

- ``postgresql://``, ``postgres://``, ``postgresql+psycopg2://``, ``postgres+psycopg2://``, with
  any libpq query parameters (``?sslmode=require``, ``?host=/run/postgresql``) kept as they are.

Anything else (another driver such as ``+asyncpg``/``+psycopg``, another database, no database
name, text that is not a URL) raises :class:`DatabaseURLError` with one line an operator can act
on, the password never shown.
"""
from __future__ import annotations

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

DRIVER = "psycopg2"  # the one PostgreSQL driver the project installs (pyproject.toml)
SCHEMES = ("postgresql", "postgres")
EXAMPLE = "postgresql://user:password@host:5432/dbname"


class DatabaseURLError(ValueError):
    """The configured database URL cannot be used. ``str()`` is one line, password hidden."""


def database_url(raw: str | URL) -> URL:
    """``raw`` (DATABASE_URL as written) as the URL to build engines from: driver psycopg2,
    everything else (user, password, host, port, database, query) unchanged. Idempotent.

    Raises DatabaseURLError for a form we cannot serve (see the module docstring)."""
    if isinstance(raw, URL):
        url = raw
    else:
        text = (raw or "").strip()
        if not text:
            raise DatabaseURLError(f"DATABASE_URL is empty; expected {EXAMPLE}")
        try:
            url = make_url(text)
        except (ArgumentError, ValueError):  # ValueError: a port that is not a number
            # Not parseable: show at most its scheme (the rest may hold a password).
            scheme = text.split("://", 1)[0][:30] if "://" in text else None
            shown = f"(scheme {scheme!r}) " if scheme else ""
            raise DatabaseURLError(f"DATABASE_URL {shown}is not a database URL; expected {EXAMPLE}") from None
    backend, _, driver = url.drivername.partition("+")
    if backend not in SCHEMES:
        raise DatabaseURLError(
            f"DATABASE_URL is for {backend!r} ({redact(url)}); this project runs on PostgreSQL: {EXAMPLE}")
    if driver not in ("", DRIVER):
        raise DatabaseURLError(
            f"DATABASE_URL asks for the driver {driver!r} ({redact(url)}), which this project does not ship; "
            f"write postgresql://… (psycopg2 is used) or postgresql+{DRIVER}://…")
    if not url.database:
        raise DatabaseURLError(f"DATABASE_URL names no database ({redact(url)}); expected {EXAMPLE}")
    return url.set(drivername=f"postgresql+{DRIVER}")


def redact(url: str | URL) -> str:
    """The URL for messages and logs: the password replaced by ``***``."""
    try:
        return (url if isinstance(url, URL) else make_url(url)).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<not a URL>"
