"""The offline print shop (``POD_PROVIDER=local``, the default): ``LocalPrintShop``.

A print shop on this machine that behaves like Lulu over time. Jobs are JSON files under
``$LOCAL_STORAGE_ROOT/printshop/``; their files are checked like Lulu's normalization does (page
size = trim + bleed, page count within the product's range, fonts embedded, cover size;
pipeline/orders/print_files/checks.py) and a job moves through Lulu's statuses over time
(``LOCAL_PRINT_SHOP_STAGE_SECONDS`` per stage), ending SHIPPED with a tracking number, or
REJECTED with the reasons. The demo orders from it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from pipeline.kernel.errors import PermanentStepError
from pipeline.providers.print_jobs import ACTIVE, IN_PRODUCTION, SHIPPED, PrintJob, PrintJobRequest

log = logging.getLogger(__name__)

_TIMELINE = (  # (status, stages it lasts); then SHIPPED
    ("CREATED", 1), ("UNPAID", 1), ("PAYMENT_IN_PROGRESS", 1), ("PRODUCTION_DELAYED", 1),
    ("PRODUCTION_READY", 1), ("IN_PRODUCTION", 2),
)


@dataclass
class _LocalJob:
    id: str
    created: float
    request: dict[str, Any]
    errors: list[str] = field(default_factory=list)
    canceled: float | None = None


def print_shop_stage_seconds() -> float:
    """LOCAL_PRINT_SHOP_STAGE_SECONDS: seconds the offline print shop spends in each status
    (default 3). Raises SystemExit("configuration error: …") outside 0–86400."""
    from pipeline.config import env_float

    return env_float("LOCAL_PRINT_SHOP_STAGE_SECONDS", 3.0, 0.0, 86400.0)


class LocalPrintShop:
    """A print shop on this machine that behaves like Lulu over time (see the module doc).

    Jobs live in ``<root>/printshop/jobs/<id>.json``; ``<root>/printshop/orders/<external id>/``
    lists the jobs of each order, so ``find_job`` works after a crash like Lulu's search does."""

    name = "local"

    def __init__(self, root: Path, *, stage_seconds: float = 3.0) -> None:
        self.root = root / "printshop"
        self.stage_seconds = stage_seconds

    @classmethod
    def from_env(cls, root: Path) -> LocalPrintShop:
        """A shop under ``root`` with ``LOCAL_PRINT_SHOP_STAGE_SECONDS`` per status."""
        return cls(root, stage_seconds=print_shop_stage_seconds())

    def cover_dimensions(self, pod_package_id: str, page_count: int) -> tuple[float, float]:
        """The one-piece cover's (width, height) in points, as Lulu computes it for this product
        (pipeline/orders/print_files/products.py); PermanentStepError for a product the shop does not make."""
        from pipeline.orders.print_files import cover_size_pt, parse_pod_package

        try:
            return cover_size_pt(parse_pod_package(pod_package_id), page_count)
        except ValueError as e:
            raise PermanentStepError(f"The print shop does not make {pod_package_id!r}: {e}") from None

    def _path(self, job_id: str) -> Path:
        if not job_id.isalnum():
            raise PermanentStepError(f"No print job {job_id[:40]!r} at the local print shop.")
        return self.root / "jobs" / f"{job_id}.json"

    def _load(self, job_id: str) -> _LocalJob:
        try:
            raw = json.loads(self._path(job_id).read_text())
        except FileNotFoundError:
            raise PermanentStepError(f"No print job {job_id!r} at the local print shop.") from None
        return _LocalJob(raw["id"], raw["created"], raw["request"], raw.get("errors", []), raw.get("canceled"))

    def _save(self, job: _LocalJob) -> None:
        path = self._path(job.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp-{uuid.uuid4().hex[:6]}")
        tmp.write_text(json.dumps(job.__dict__))
        os.replace(tmp, path)  # atomic: a reader never sees half a job

    def _view(self, job: _LocalJob) -> PrintJob:
        elapsed = (time.time() - job.created) / max(self.stage_seconds, 1e-6)
        status, message, changed_at = "SHIPPED", "All line-items were shipped", job.created
        if job.errors and elapsed >= 1:
            status, message = "REJECTED", "; ".join(job.errors)
            changed_at = job.created + self.stage_seconds
        else:
            t = 0.0
            for name, stages in _TIMELINE:
                if elapsed < t + stages:
                    status, message = name, ""
                    break
                t += stages
            changed_at = job.created + min(elapsed, t) * self.stage_seconds
        if job.canceled is not None and status not in (IN_PRODUCTION, SHIPPED, "REJECTED"):
            status, message, changed_at = "CANCELED", "Canceled at our request", job.canceled
        req = job.request
        shipped = status == SHIPPED
        return PrintJob(
            id=job.id, external_id=req["external_id"], status=status, message=message,
            changed=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(changed_at)) + f".{int(changed_at % 1 * 1e6):06d}Z",
            line_item_external_ids=(req["line_item_external_id"],),
            tracking_id=f"LP{job.id[:12].upper()}" if shipped else None,
            tracking_urls=(f"https://tracking.invalid/LP{job.id[:12].upper()}",) if shipped else (),
            carrier="Local Post" if shipped else None,
            created=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(job.created)),
        )

    def _read(self, url: str) -> bytes | None:
        parts = urlsplit(url)
        try:
            if parts.scheme == "file":
                return Path(unquote(parts.path)).read_bytes()
            if parts.scheme in ("http", "https"):
                resp = httpx.get(url, timeout=30)
                return resp.content if resp.status_code == 200 else None
        except (OSError, httpx.HTTPError, httpx.InvalidURL):
            return None
        return None

    def create_job(self, req: PrintJobRequest) -> PrintJob:
        """Download and check the print files (MD5, page size, page count, fonts, cover size), then
        record the job: it moves through Lulu's statuses over time, or is REJECTED with the reasons."""
        from pipeline.orders.print_files import check_print_files

        interior, cover = self._read(req.interior_url), self._read(req.cover_url)
        errors: list[str] = []
        if interior is None or cover is None:
            errors.append("The print files could not be downloaded.")
        else:
            if hashlib.md5(interior).hexdigest() != req.interior_md5:  # noqa: S324 - Lulu's own checksum
                errors.append("interior: the file does not match its MD5 checksum")
            try:
                errors += check_print_files(interior, cover, req.pod_package_id,
                                            self.cover_dimensions(req.pod_package_id, req.page_count))
            except ImportError:  # pypdfium2 reads the PDFs; without it the shop trusts them
                log.warning("local print shop: pypdfium2 is not installed; print files not checked")
        job = _LocalJob(uuid.uuid4().hex[:16], time.time(), {
            "external_id": req.external_id, "line_item_external_id": req.line_item_external_id,
            "title": req.title, "pod_package_id": req.pod_package_id, "shipping_level": req.shipping_level,
            "country": req.shipping_address.get("country_code"),
        }, errors)
        self._save(job)
        index = self.root / "orders" / req.external_id
        index.mkdir(parents=True, exist_ok=True)
        (index / job.id).write_text(req.line_item_external_id)
        log.info("local print shop: job %s created (%s)", job.id, "files rejected" if errors else "files ok")
        return self._view(job)

    def find_job(self, external_id: str, line_item_external_id: str) -> PrintJob | None:
        """The newest job of this order and print run, or None."""
        index = self.root / "orders" / external_id
        if not index.is_dir():
            return None
        mine = [p.name for p in index.iterdir() if p.read_text() == line_item_external_id]
        jobs = sorted((self._load(j) for j in mine), key=lambda j: j.created)
        return self._view(jobs[-1]) if jobs else None

    def get_job(self, job_id: str) -> PrintJob:
        """The job as it stands now; PermanentStepError for an unknown id."""
        return self._view(self._load(job_id))

    def cancel_job(self, job_id: str) -> None:
        """Cancel a job that is not yet in production (later: no effect, as at Lulu)."""
        job = self._load(job_id)
        if job.canceled is None and self._view(job).status in ACTIVE:
            job.canceled = time.time()
            self._save(job)

    def erase_order(self, external_id: str) -> int:
        """Forget an order at the shop (README "Forgetting a family": as a deletion request to the
        print provider would): every job of the order (its title may name the child) and the
        order's index removed; how many files. Absent ones are no error; an id that is not a
        plain id (letters, digits, ``-``) removes nothing."""
        if not external_id.replace("-", "").isalnum():
            return 0
        index = self.root / "orders" / external_id
        if not index.is_dir():
            return 0
        n = 0
        for entry in index.iterdir():
            if entry.name.isalnum():
                job = self._path(entry.name)
                if job.exists():
                    job.unlink()
                    n += 1
            entry.unlink()
            n += 1
        index.rmdir()
        return n
