"""Print-on-demand, vendor-neutral: what the order workers need from a print shop.

``PrintProvider`` is the interface (the cover size for a book, create a print job once and find
it again by our order id, read its status, cancel it); ``PrintJobRequest`` and ``PrintJob`` are
what crosses it. Implementations: ``pipeline.providers.lulu.LuluClient`` (the Lulu Print API) and
``pipeline.orders.offline_print_shop.LocalPrintShop`` (offline, the default).

Job statuses use Lulu's names (https://api.lulu.com/docs/, print job ``status.name``), the most
detailed public vocabulary for this; the offline shop moves through the same ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

# A job is followed until it is SHIPPED or in a problem status.
ACTIVE = ("CREATED", "UNPAID", "PAYMENT_IN_PROGRESS", "PRODUCTION_DELAYED", "PRODUCTION_READY")
IN_PRODUCTION = "IN_PRODUCTION"
SHIPPED = "SHIPPED"
PROBLEMS = ("REJECTED", "CANCELED", "ERROR")
KNOWN = (*ACTIVE, IN_PRODUCTION, SHIPPED, *PROBLEMS)

REASON_CHARS = 300


@dataclass(frozen=True)
class PrintJobRequest:
    """One book to print and ship, as the order workers ask for it."""

    external_id: str  # our order id
    line_item_external_id: str  # order id + print run: tells this run's job from an earlier run's
    title: str
    pod_package_id: str
    page_count: int
    interior_url: str
    interior_md5: str
    cover_url: str
    cover_md5: str
    shipping_address: dict[str, Any]  # Lulu's field names (pipeline.orders.steps.lulu_address)
    shipping_level: str
    contact_email: str
    quantity: int = 1
    production_delay: int | None = None  # minutes; Lulu's default (60) when None


@dataclass(frozen=True)
class PrintJob:
    """A print job as last seen at the provider."""

    id: str
    external_id: str | None
    status: str  # one of KNOWN (an unknown name is kept as is and treated as still active)
    message: str = ""  # the provider's words on the status (why it was rejected, ...)
    changed: str | None = None  # ISO 8601 time of the last status change, as the provider says
    line_item_external_ids: tuple[str, ...] = ()
    tracking_id: str | None = None
    tracking_urls: tuple[str, ...] = ()
    carrier: str | None = None
    created: str | None = None
    # What the provider charges for the job (Lulu's costs, tax included; None until priced), in
    # micro-cents of ``cost_currency`` (README "What each book costs")
    cost_microcents: int | None = None
    cost_currency: str | None = None

    @property
    def problem(self) -> bool:
        """Is the job in a problem status (REJECTED, CANCELED, ERROR)?"""
        return self.status in PROBLEMS

    def reason(self) -> str:
        """The provider's reason, for a person (bounded)."""
        return (self.message or self.status)[:REASON_CHARS]

    def to_json(self) -> dict[str, Any]:
        """The fields the order history records (message bounded to 300 characters)."""
        return {"id": self.id, "status": self.status, "message": self.message[:REASON_CHARS],
                "changed": self.changed, "tracking_id": self.tracking_id,
                "tracking_urls": list(self.tracking_urls), "carrier": self.carrier}


class PrintProvider(Protocol):
    """A print-on-demand shop, as the order workers use it."""

    name: str  # stored in orders.pod_provider

    def cover_dimensions(self, pod_package_id: str, page_count: int) -> tuple[float, float]:
        """The one-piece cover's (width, height) in points for this book."""
        ...

    def find_job(self, external_id: str, line_item_external_id: str) -> PrintJob | None:
        """The newest job created for this order and print run, if any (after a crash)."""
        ...

    def create_job(self, req: PrintJobRequest) -> PrintJob:
        """Create the print job for ``req`` and return it as first seen."""
        ...

    def get_job(self, job_id: str) -> PrintJob:
        """The job as it stands now."""
        ...

    def cancel_job(self, job_id: str) -> None:
        """Cancel the job if the shop still can."""
        ...
