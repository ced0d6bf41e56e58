"""Lulu's print job JSON (``parse_job``) and its signed webhooks (``verify_webhook``).

Print job fields as Lulu's API documents them (https://api.lulu.com/docs/: ``id``,
``external_id``, ``status.name/message/changed``, ``line_items[].external_id/tracking_id/
tracking_urls/carrier_name`` and the per-file ``printable_normalization`` messages); webhooks
(``PRINT_JOB_STATUS_CHANGED``) carry the same job as ``data`` and are signed with HMAC-SHA256
of the raw body keyed with the API secret, in the ``Lulu-HMAC-SHA256`` header.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from pipeline.providers.print_jobs import PROBLEMS, PrintJob
from pipeline.providers.usage_calls import lulu_cost

WEBHOOK_HEADER = "Lulu-HMAC-SHA256"


def _as_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list):
        return tuple(str(v) for v in value if v)
    return ()


def _messages(status: Any) -> dict[str, Any]:
    msgs = status.get("messages") if isinstance(status, Mapping) else None
    return dict(msgs) if isinstance(msgs, Mapping) else {}


def _reasons(msgs: Mapping[str, Any]) -> list[str]:
    """A line item's status messages that explain a problem (Lulu: error, info, and the
    normalization messages per file)."""
    out: list[str] = []
    for key in ("error", "info"):
        if isinstance(msgs.get(key), str) and msgs[key]:
            out.append(msgs[key])
    norm = msgs.get("printable_normalization")
    if isinstance(norm, Mapping):
        for part in ("interior", "cover"):
            for m in _as_list(norm.get(part)):
                out.append(f"{part}: {m}")
    return out


def parse_job(data: Any) -> PrintJob:
    """A PrintJob from Lulu's print job JSON (details endpoint, list results, webhook data).
    ValueError if it is not one."""
    if not isinstance(data, Mapping) or data.get("id") in (None, ""):
        raise ValueError("not a print job (no id)")
    status = data.get("status")
    if isinstance(status, str):  # tolerate a flattened status
        status = {"name": status}
    if not isinstance(status, Mapping) or not isinstance(status.get("name"), str):
        raise ValueError("a print job without a status name")
    name = status["name"].strip().upper()
    message = status.get("message") if isinstance(status.get("message"), str) else ""
    reasons: list[str] = [message] if message else []
    tracking_id: str | None = None
    urls: tuple[str, ...] = ()
    carrier: str | None = None
    line_ids: list[str] = []
    items: list[Any] = data["line_items"] if isinstance(data.get("line_items"), list) else []
    statuses: list[Any] = data["line_item_statuses"] if isinstance(data.get("line_item_statuses"), list) else []
    for item in [*items, *statuses]:
        if not isinstance(item, Mapping):
            continue
        if isinstance(item.get("external_id"), str):
            line_ids.append(item["external_id"])
        msgs = _messages(item.get("status") if "status" in item else item)
        tracking_id = tracking_id or item.get("tracking_id") or msgs.get("tracking_id") or None
        urls = urls or _as_list(item.get("tracking_urls")) or _as_list(msgs.get("tracking_urls"))
        carrier = carrier or item.get("carrier_name") or msgs.get("carrier_name") or None
        if name in PROBLEMS:
            reasons += [r for r in _reasons(msgs) if r not in reasons]
    cost = lulu_cost(data)
    return PrintJob(
        id=str(data["id"]), external_id=str(data["external_id"]) if data.get("external_id") else None,
        status=name, message="; ".join(reasons)[:1000],
        changed=str(status["changed"]) if status.get("changed") else None,
        line_item_external_ids=tuple(line_ids), tracking_id=str(tracking_id) if tracking_id else None,
        tracking_urls=urls, carrier=str(carrier) if carrier else None,
        created=str(data["date_created"]) if data.get("date_created") else None,
        cost_microcents=cost[0] if cost else None, cost_currency=cost[1] if cost else None,
    )


def verify_webhook(payload: str | bytes, signature: str | None, secret: str) -> bool:
    """Is ``signature`` (the ``Lulu-HMAC-SHA256`` header) Lulu's HMAC-SHA256 of the raw body,
    keyed with our API secret? Accepts the hex digest (Lulu's) or its base64 form."""
    if not signature or not secret:
        return False
    body = payload.encode() if isinstance(payload, str) else payload
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    offered = signature.strip()
    return hmac.compare_digest(digest.hex(), offered.lower()) or hmac.compare_digest(
        base64.b64encode(digest).decode(), offered)


def webhook_signature(payload: str | bytes, secret: str) -> str:
    """The header value Lulu would send for ``payload`` (tests, tools)."""
    body = payload.encode() if isinstance(payload, str) else payload
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
