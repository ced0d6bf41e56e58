"""The order flow's configuration: OrderSettings from the environment, the deployment's Stripe mode,
and the print provider (Lulu, or the offline print shop) each order step talks to."""
from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pipeline.config import _choice, env_float, env_int, settings
from pipeline.kernel.errors import PermanentStepError
from pipeline.orders.offline_print_shop import LocalPrintShop
from pipeline.providers import lulu

PROVIDER_LABEL = {"lulu": "Lulu", "local": "the local print shop"}


@dataclass(frozen=True)
class OrderSettings:
    """The order flow's settings, read from the environment once per process (order_settings());
    each field names its variable. Bad values are a configuration error (SystemExit), found at
    boot by pipeline.operations.boot_check."""

    pod_provider: str  # POD_PROVIDER: local | lulu
    poll_interval: float  # ORDER_POLL_INTERVAL: seconds between looks at a print job
    story_wait: float  # ORDER_STORY_WAIT_SECONDS: how long a paid order waits for its story
    shipping_level: str  # LULU_SHIPPING_LEVEL
    contact_email: str | None  # LULU_CONTACT_EMAIL (else the ordering user's email)
    production_delay: int | None  # LULU_PRODUCTION_DELAY minutes (Lulu's default 60 when unset)
    files_base_url: str | None  # PRINT_FILES_BASE_URL: public base URL of the storage
    stripe_secrets: tuple[str, ...]  # STRIPE_WEBHOOK_SECRET (comma-separated during a rotation)
    stripe_tolerance: float  # STRIPE_SIGNATURE_TOLERANCE
    stripe_require_signature: bool  # STRIPE_REQUIRE_SIGNATURE: refuse events without the raw payload
    stripe_mode: str  # STRIPE_MODE live | test (else from STRIPE_SECRET_KEY's prefix, else live)
    stripe_secret_key: str | None  # STRIPE_SECRET_KEY: confirms events with Stripe's API (read Events)
    stripe_api_base: str | None  # STRIPE_API_BASE: another Stripe API host (tests, stripe-mock)
    default_phone: str | None  # LULU_DEFAULT_PHONE_NUMBER: sent when the shipping address has none
    lulu_webhook_secret: str  # LULU_WEBHOOK_SECRET, default LULU_CLIENT_SECRET (Lulu signs with it)

    @property
    def poll_countdown(self) -> float:
        """Seconds until the next look at a print job (ORDER_POLL_INTERVAL, kept under half the
        broker's visibility timeout, at least 0.05)."""
        # A re-scheduled task waits in a worker as an unacked message with an ETA; on Redis it
        # must come due before the visibility timeout or the broker delivers it a second time.
        return max(0.05, min(self.poll_interval, settings().visibility_timeout / 2))

    @property
    def story_wait_poll(self) -> float:
        """Seconds between looks at a story in progress that a paid order waits for (at most 15)."""
        return max(0.05, min(15.0, self.poll_interval))


@lru_cache(maxsize=1)
def order_settings() -> OrderSettings:
    """The process's OrderSettings (cached; ``order_settings.cache_clear()`` reads again).
    Raises SystemExit("configuration error: ...") for a bad value."""
    e = os.environ
    delay = e.get("LULU_PRODUCTION_DELAY", "").strip()
    if delay:  # minutes; a whole number (Lulu's print-job field is an integer)
        env_int("LULU_PRODUCTION_DELAY", 60, 0, 100_000)
    return OrderSettings(
        pod_provider=_choice("POD_PROVIDER", "local", ("local", "lulu")),
        poll_interval=env_float("ORDER_POLL_INTERVAL", 300.0, 0.05, 86400.0),
        story_wait=env_float("ORDER_STORY_WAIT_SECONDS", 86400.0, 1.0, 30 * 86400.0),
        shipping_level=e.get("LULU_SHIPPING_LEVEL", "MAIL").strip().upper() or "MAIL",
        contact_email=e.get("LULU_CONTACT_EMAIL", "").strip() or None,
        production_delay=int(float(delay)) if delay else None,  # checked at boot (pipeline.operations.boot_check)
        files_base_url=e.get("PRINT_FILES_BASE_URL", "").strip() or None,
        stripe_secrets=tuple(s.strip() for s in e.get("STRIPE_WEBHOOK_SECRET", "").split(",") if s.strip()),
        stripe_tolerance=env_float("STRIPE_SIGNATURE_TOLERANCE", 300.0, 1.0, 86400.0),
        stripe_require_signature=e.get("STRIPE_REQUIRE_SIGNATURE", "").lower() in ("1", "true", "yes"),
        stripe_mode=stripe_mode(e),
        stripe_secret_key=e.get("STRIPE_SECRET_KEY", "").strip() or None,
        stripe_api_base=e.get("STRIPE_API_BASE", "").strip() or None,
        default_phone=" ".join(e.get("LULU_DEFAULT_PHONE_NUMBER", "").split()) or None,
        lulu_webhook_secret=e.get("LULU_WEBHOOK_SECRET") or e.get("LULU_CLIENT_SECRET", ""),
    )


def stripe_mode(env: Mapping[str, str]) -> str:
    """The deployment's Stripe mode, ``live`` or ``test``: STRIPE_MODE, else the mode of
    STRIPE_SECRET_KEY (``sk_live_``/``rk_live_`` or ``sk_test_``/``rk_test_``, Stripe's key
    prefixes), else ``live``: the safe default, where a test-mode payment never prints a real
    book (a development setup says STRIPE_MODE=test). A mode that contradicts the key is a
    configuration error (SystemExit, like the other settings)."""
    key = env.get("STRIPE_SECRET_KEY", "").strip()
    from_key = ("live" if key.startswith(("sk_live_", "rk_live_"))
                else "test" if key.startswith(("sk_test_", "rk_test_")) else None)
    explicit = env.get("STRIPE_MODE", "").strip().lower() or None
    if explicit not in (None, "live", "test"):
        raise SystemExit(f"configuration error: STRIPE_MODE={explicit!r}; choose one of live, test")
    if explicit and from_key and explicit != from_key:
        raise SystemExit(f"configuration error: STRIPE_MODE={explicit} but STRIPE_SECRET_KEY is a {from_key}-mode key")
    return explicit or from_key or "live"


_lock = threading.Lock()
_providers: dict[tuple[int, str], lulu.PrintProvider] = {}


def print_provider(name: str | None = None) -> lulu.PrintProvider:
    """The print provider by name (an order follows the one its job was created with),
    default POD_PROVIDER. One per process."""
    key = (os.getpid(), name or order_settings().pod_provider)
    with _lock:
        if key not in _providers:
            if key[1] == "lulu":
                try:
                    from pipeline.kernel.quota import QuotaHooks

                    hooks: Any = QuotaHooks()
                except ImportError:  # quotas are optional for the client itself
                    hooks = None
                _providers[key] = lulu.LuluClient.from_env(hooks=hooks)
            elif key[1] == "local":
                _providers[key] = LocalPrintShop.from_env(settings().local_storage_root)
            else:
                raise PermanentStepError(f"Unknown print provider {key[1]!r} (POD_PROVIDER: local or lulu).")
        return _providers[key]
