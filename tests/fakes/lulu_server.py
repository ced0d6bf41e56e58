"""A fake Lulu Print API for tests: real HTTP on 127.0.0.1, the real client (requests) in front.

What it speaks, like api.lulu.com:

- ``POST /auth/realms/glasstree/protocol/openid-connect/token``: client credentials by HTTP Basic;
  Keycloak's 401 ``{"error": "unauthorized_client", ...}`` for a wrong key or secret. Tokens
  expire after ``token_ttl`` seconds (the server enforces it) and ``revoke_tokens()`` kills
  every token issued so far (a 401 ``{"detail": ...}`` on the next call).
- ``POST /print-jobs/`` (validates the body like Lulu: 400 with ``{"field": ["msg"]}``; the
  shipping address by Lulu's published schema, ADDRESS_SCHEMA_URL: name, street1, city,
  country_code, postcode, phone_number (or the account's default, ``account_phone``) and email
  required, state_code for US/CA/AU/MX, recipient_tax_id for BR/CL/MX, lengths, phone pattern),
  ``GET /print-jobs/?search=&page=&page_size=`` (paginated, ``next`` absolute),
  ``GET /print-jobs/{id}/``, ``GET|PUT /print-jobs/{id}/status/``, ``POST /cover-dimensions/``.
- The files: on create it downloads ``source_url`` (``file:`` or ``http:``), checks the MD5 and
  runs the checks of pipeline.orders.print_files (page size = trim + bleed, page count in the
  binding's range, fonts embedded, cover size). A job is CREATED, then on the first read after
  ``validation_seconds`` UNPAID, or REJECTED with the reasons. Tests move it on with
  ``set_status`` (IN_PRODUCTION, SHIPPED with tracking, ERROR, ...).
- ``webhook(job_id)``: the PRINT_JOB_STATUS_CHANGED body and headers Lulu would POST, signed
  (``Lulu-HMAC-SHA256``: HMAC-SHA256 of the raw body with the API secret).

Fault injection: ``script(op, [...])`` queues responses for the next requests of one operation
(``token``, ``create_job``, ``list_jobs``, ``get_job``, ``job_status``, ``cancel_job``,
``cover_dimensions``): ``("status", code, headers, body)``, ``("hang", seconds)``, ``("close",)``,
``("malformed",)``. ``hold_next_create(seconds)``: the next create really creates the job, sets
the returned Event, then says nothing for that long (a worker killed after creating a job).
``fail_reads[job_id] = code``: every read of that job answers ``code``. ``max_interior_pages``:
a stricter rule than the product's, so real files fail validation. Every request is recorded
in ``requests`` (``method``, ``op``, ``path``, ``query``, ``headers``, ``json``, ``status``, ``t``).
"""
from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import re
import threading
import time
from collections import deque
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import httpx

from pipeline.orders.print_files import check_print_files, cover_size_pt, parse_pod_package
from tests.fakes.base import LocalHTTPFake

CLIENT_KEY = "lulu-test-client-key"
CLIENT_SECRET = "lulu-test-client-SECRET-0123456789"
ADDRESS_SCHEMA_URL = "https://api.lulu.com/docs/"  # the OpenAPI spec behind it: openapi_public.yml
SHIPPING_LEVELS = ("MAIL", "PRIORITY_MAIL", "GROUND_HD", "GROUND_BUS", "GROUND", "EXPEDITED", "EXPRESS")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class FakeLulu(LocalHTTPFake):
    name = "fake-lulu"

    def __init__(self, client_key: str = CLIENT_KEY, client_secret: str = CLIENT_SECRET, *,
                 token_ttl: float = 3600, validation_seconds: float = 0.0) -> None:
        super().__init__()
        self.client_key, self.client_secret = client_key, client_secret
        self.token_ttl = token_ttl
        self.validation_seconds = validation_seconds
        self.max_interior_pages: int | None = None
        self.max_page_size = 100
        self.account_phone: str | None = None  # the API user's default phone number (Lulu uses it)
        self.fail_reads: dict[str, int] = {}
        self.requests: list[dict[str, Any]] = []
        self.jobs: dict[str, dict[str, Any]] = {}
        self._validation: dict[str, list[str]] = {}
        self._created_at: dict[str, float] = {}
        self._tokens: dict[str, float] = {}  # token -> expires (monotonic)
        self._scripts: dict[str, deque[tuple[Any, ...]]] = {}
        self._hold: tuple[float, threading.Event] | None = None
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._next_id = 5000
        self._tokens_issued = 0

    @property
    def base_url(self) -> str:
        return self.root

    def _after_stop(self) -> None:
        self._release.set()  # a create reply held by a test

    # --- test controls ----------------------------------------------------------------------

    def reset(self) -> None:
        """Back to normal behaviour (jobs and the request log are kept)."""
        with self._lock:
            self.max_interior_pages = None
            self.max_page_size = 100
            self.account_phone = None
            self.fail_reads.clear()
            self._scripts.clear()
            self._hold = None
            self.token_ttl = 3600
        self._release.set()
        self._release = threading.Event()

    def script(self, op: str, items: list[tuple[Any, ...]]) -> None:
        with self._lock:
            self._scripts.setdefault(op, deque()).extend(items)

    def hold_next_create(self, seconds: float) -> threading.Event:
        created = threading.Event()
        with self._lock:
            self._hold = (seconds, created)
        return created

    def release_holds(self) -> None:
        self._release.set()

    def revoke_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    def jobs_for(self, order_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(j) for j in self.jobs.values() if j["external_id"] == order_id]

    def creates_for(self, order_id: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["op"] == "create_job" and isinstance(r["json"], dict)
                and r["json"].get("external_id") == order_id]

    def set_status(self, job_id: str, name: str, message: str = "", *, tracking_id: str | None = None,
                   carrier: str = "UPS") -> dict[str, Any]:
        with self._lock:
            job = self.jobs[job_id]
            self._set(job, name, message)
            if name == "SHIPPED":
                for li in job["line_items"]:
                    urls = [f"https://tracking.example/{tracking_id}"] if tracking_id else []
                    li["tracking_id"], li["tracking_urls"], li["carrier_name"] = tracking_id, urls, carrier
                    li["status"] = {"name": "SHIPPED", "messages": {"tracking_id": tracking_id,
                                                                   "tracking_urls": urls, "carrier_name": carrier}}
            return copy.deepcopy(job)

    def webhook(self, job_id: str) -> tuple[str, dict[str, str]]:
        """(raw body, headers) of the PRINT_JOB_STATUS_CHANGED webhook for the job as it is now."""
        with self._lock:
            body = json.dumps({"topic": "PRINT_JOB_STATUS_CHANGED", "data": self.jobs[job_id]})
        sig = hmac.new(self.client_secret.encode(), body.encode(), hashlib.sha256).hexdigest()
        return body, {"Content-Type": "application/json", "Lulu-HMAC-SHA256": sig}

    # --- state ------------------------------------------------------------------------------

    @staticmethod
    def _set(job: dict[str, Any], name: str, message: str = "") -> None:
        job["status"] = {"name": name, "message": message, "changed": _now()}
        job["date_modified"] = job["status"]["changed"]
        for li in job["line_items"]:
            li["status"] = {"name": name if name in ("CREATED", "REJECTED", "IN_PRODUCTION", "ERROR", "SHIPPED")
                            else "ACCEPTED", "messages": {"info": message} if message else {}}

    def _settle(self, job_id: str) -> None:
        """File validation finishes a moment after creation: UNPAID, or REJECTED with reasons."""
        job = self.jobs[job_id]
        if job["status"]["name"] != "CREATED" or time.monotonic() - self._created_at[job_id] < self.validation_seconds:
            return
        errors = self._validation.get(job_id, [])
        if errors:
            self._set(job, "REJECTED", "The print files failed validation")
            for li in job["line_items"]:
                li["status"]["messages"] = {"error": "; ".join(errors), "printable_normalization": {
                    "interior": [e for e in errors if e.startswith("interior")],
                    "cover": [e for e in errors if e.startswith("cover")]}}
        else:
            self._set(job, "UNPAID")

    def _read_file(self, url: str) -> bytes | None:
        parts = urlsplit(url)
        try:
            if parts.scheme == "file":
                return Path(unquote(parts.path)).read_bytes()
            if parts.scheme in ("http", "https"):
                r = httpx.get(url, timeout=5)
                return r.content if r.is_success else None
        except (OSError, httpx.HTTPError):
            return None
        return None

    def _validate_body(self, body: Any) -> dict[str, Any]:
        errors: dict[str, Any] = {}
        if not isinstance(body, dict):
            return {"detail": "JSON parse error"}
        if not body.get("contact_email"):
            errors["contact_email"] = ["This field is required."]
        if body.get("shipping_level") not in SHIPPING_LEVELS:
            errors["shipping_level"] = [f'"{body.get("shipping_level")}" is not a valid choice.']
        addr = body.get("shipping_address")
        if not isinstance(addr, dict):
            errors["shipping_address"] = ["This field is required."]
        else:
            missing = self._validate_address(addr)
            if missing:
                errors["shipping_address"] = missing
        items = body.get("line_items")
        if not isinstance(items, list) or not items:
            errors["line_items"] = ["This field is required."]
        else:
            item_errors: list[dict[str, Any]] = []
            for li in items:
                e: dict[str, Any] = {}
                pn = li.get("printable_normalization") if isinstance(li, dict) else None
                if not isinstance(pn, dict):
                    e["printable_normalization"] = ["This field is required."]
                else:
                    try:
                        parse_pod_package(str(pn.get("pod_package_id", "")))
                    except ValueError:
                        e.setdefault("printable_normalization", {})["pod_package_id"] = ["Invalid pod_package_id."]
                    for part in ("interior", "cover"):
                        if not (isinstance(pn.get(part), dict) and pn[part].get("source_url")):
                            e.setdefault("printable_normalization", {})[part] = {
                                "source_url": ["This field is required."]}
                if not isinstance(li, dict) or not isinstance(li.get("quantity"), int) or li["quantity"] < 1:
                    e["quantity"] = ["A valid integer is required."]
                item_errors.append(e)
            if any(item_errors):
                errors["line_items"] = item_errors
        return errors

    def _validate_address(self, addr: dict[str, Any]) -> dict[str, list[str]]:
        """Lulu's shipping_address rules (ADDRESS_SCHEMA_URL, Print-Jobs_create): the required
        fields, the account's default phone number standing in for a missing one, state_code
        where it is required, recipient_tax_id where it is required, lengths and the phone
        pattern."""
        errors = {k: ["This field is required."] for k in ("street1", "city", "country_code", "postcode", "email")
                  if not addr.get(k)}
        if addr.get("country_code") in ("HK", "AE", "QA", "MO"):  # "postcode: Required for most countries"
            errors.pop("postcode", None)
        if not addr.get("name") and not addr.get("organization"):
            errors["name"] = ["Either name or organization is required."]
        phone = addr.get("phone_number") or self.account_phone
        if not phone:
            errors["phone_number"] = ["This field is required: the shipping address and the account have no "
                                      "phone number."]
        elif not re.match(r"^\+?[\d\s\-.\/()]{8,20}$", str(phone)):
            errors["phone_number"] = ["Enter a valid phone number."]
        country = str(addr.get("country_code") or "")
        if country and len(country) != 2:
            errors["country_code"] = ["Ensure this field has exactly 2 characters."]
        if country in ("US", "CA", "AU", "MX") and not addr.get("state_code"):
            errors["state_code"] = [f"This field is required for {country}."]
        if country in ("BR", "CL", "MX") and not addr.get("recipient_tax_id"):
            errors["recipient_tax_id"] = [f"This field is required for {country}."]
        if len(str(addr.get("postcode") or "")) > 64:
            errors["postcode"] = ["Ensure this field has no more than 64 characters."]
        if addr.get("email") and "@" not in str(addr["email"]):
            errors["email"] = ["Enter a valid email address."]
        return errors

    def _create(self, body: dict[str, Any]) -> dict[str, Any]:
        li = body["line_items"][0]
        pn = li["printable_normalization"]
        interior = self._read_file(pn["interior"]["source_url"])
        cover = self._read_file(pn["cover"]["source_url"])
        problems: list[str] = []
        if interior is None or cover is None:
            problems.append("The source files could not be downloaded")
        else:
            for part, data in (("interior", interior), ("cover", cover)):
                md5 = pn[part].get("source_md5_sum") or pn[part].get("source_md5sum")
                if md5 and hashlib.md5(data).hexdigest() != md5:  # noqa: S324 - Lulu's own checksum
                    problems.append(f"{part}: the file does not match source_md5_sum")
            from pipeline.orders.print_files import inspect_pdf

            try:
                pages = inspect_pdf(interior).pages
            except ValueError:
                pages = 0
            spec = parse_pod_package(pn["pod_package_id"])
            problems += check_print_files(interior, cover, pn["pod_package_id"], cover_size_pt(spec, pages))
            if self.max_interior_pages is not None and pages > self.max_interior_pages:
                problems.append(f"interior: {pages} pages; at most {self.max_interior_pages} are allowed")
        with self._lock:
            self._next_id += 1
            job_id = str(self._next_id)
            now = _now()
            job = {
                "id": int(job_id), "external_id": body.get("external_id"), "contact_email": body["contact_email"],
                "date_created": now, "date_modified": now, "order_id": None,
                "production_delay": body.get("production_delay", 60), "production_due_time": None,
                "shipping_address": body["shipping_address"], "shipping_level": body["shipping_level"],
                "shipping_option_level": body["shipping_level"],
                "costs": {"line_item_costs": None, "shipping_cost": None, "total_cost_excl_tax": None,
                          "total_cost_incl_tax": None, "total_tax": None, "currency": "USD"},
                "estimated_shipping_dates": {"arrival_max": None, "arrival_min": None},
                "line_items": [{
                    "id": int(job_id) + 100000, "external_id": li.get("external_id"), "title": li.get("title"),
                    "quantity": li["quantity"], "printable_id": None,
                    "printable_normalization": {
                        "pod_package_id": pn["pod_package_id"],
                        "interior": {**pn["interior"], "job_id": None, "normalized_file": None, "page_count": None},
                        "cover": {**pn["cover"], "job_id": None, "normalized_file": None, "page_count": None}},
                    "tracking_id": None, "tracking_urls": None, "carrier_name": None,
                }],
                "status": {},
            }
            self._set(job, "CREATED", "Print-job is currently being validated")
            self.jobs[job_id] = job
            self._validation[job_id] = problems
            self._created_at[job_id] = time.monotonic()
            return copy.deepcopy(job)

    # --- used by the handler ----------------------------------------------------------------

    def _record(self, entry: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.requests.append(entry)
        return entry

    def _next(self, op: str) -> tuple[Any, ...] | None:
        with self._lock:
            q = self._scripts.get(op)
            return q.popleft() if q else None

    def _token_ok(self, auth: str) -> bool:
        token = auth.removeprefix("Bearer ").strip()
        with self._lock:
            expires = self._tokens.get(token)
        return expires is not None and expires > time.monotonic()

    def _issue(self) -> dict[str, Any]:
        with self._lock:
            self._tokens_issued += 1
            token = f"eyJfake.{self._tokens_issued}.{int(time.time() * 1000)}"
            self._tokens[token] = time.monotonic() + self.token_ttl
            ttl = self.token_ttl
        return {"access_token": token, "expires_in": int(ttl) if ttl >= 1 else ttl, "refresh_expires_in": 0,
                "token_type": "bearer", "not-before-policy": 0, "scope": "profile email"}


class _Handler(BaseHTTPRequestHandler):
    owner: FakeLulu
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def _op(self, method: str, path: str) -> tuple[str, str | None]:
        parts = [p for p in path.split("/") if p]
        if path.rstrip("/") == "/auth/realms/glasstree/protocol/openid-connect/token" and method == "POST":
            return "token", None
        if parts == ["cover-dimensions"] and method == "POST":
            return "cover_dimensions", None
        if parts == ["print-jobs"]:
            return ("create_job" if method == "POST" else "list_jobs"), None
        if len(parts) == 2 and parts[0] == "print-jobs" and method == "GET":
            return "get_job", parts[1]
        if len(parts) == 3 and parts[0] == "print-jobs" and parts[2] == "status":
            return ("cancel_job" if method == "PUT" else "job_status"), parts[1]
        return "unknown", None

    def _handle(self, method: str) -> None:
        fake = self.owner
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body: Any = None
        if raw and "json" in (self.headers.get("Content-Type") or ""):
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        op, job_id = self._op(method, url.path)
        entry = fake._record({"method": method, "op": op, "path": url.path, "query": parse_qs(url.query),
                              "headers": {k.lower(): v for k, v in self.headers.items()}, "json": body,
                              "form": parse_qs(raw.decode(errors="replace")) if op == "token" else None,
                              "t": time.monotonic(), "status": None})
        if op == "unknown":
            self._send(entry, 404, {"detail": "Not found."})
            return
        if op == "token":
            self._token(entry)
            return
        if not fake._token_ok(self.headers.get("Authorization", "")):
            detail = ("Authentication credentials were not provided." if not self.headers.get("Authorization")
                      else "Invalid or expired token.")
            self._send(entry, 401, {"detail": detail})
            return
        step = fake._next(op)
        if step is not None and self._scripted(entry, step):
            return
        if job_id is not None and job_id in fake.fail_reads and op in ("get_job", "job_status"):
            self._send(entry, fake.fail_reads[job_id], {"detail": "Service temporarily unavailable"},
                       {"Retry-After": "1"})
            return
        getattr(self, f"_{op}")(entry, body, job_id, url)

    def _scripted(self, entry: dict[str, Any], step: tuple[Any, ...]) -> bool:
        kind = step[0]
        if kind == "status":
            _, code, headers, payload = step
            self._send(entry, code, payload, headers)
            return True
        if kind == "hang":
            self.owner._stopping.wait(float(step[1]))
            return False  # then answer normally (to a client that has given up)
        if kind == "close":
            entry["status"] = "closed"
            self.close_connection = True
            return True
        if kind == "malformed":
            self._send(entry, 200, b'{"id": 1, "status": {"na')
            return True
        raise AssertionError(f"unknown scripted response {step!r}")

    # --- endpoints --------------------------------------------------------------------------

    def _token(self, entry: dict[str, Any]) -> None:
        fake = self.owner
        step = fake._next("token")
        if step is not None and self._scripted(entry, step):
            return
        auth = self.headers.get("Authorization", "")
        expected = "Basic " + base64.b64encode(f"{fake.client_key}:{fake.client_secret}".encode()).decode()
        if auth != expected:
            self._send(entry, 401, {"error": "unauthorized_client", "error_description": "Invalid client secret"})
            return
        if (entry["form"] or {}).get("grant_type") != ["client_credentials"]:
            self._send(entry, 400, {"error": "unsupported_grant_type",
                                    "error_description": "Unsupported grant_type"})
            return
        self._send(entry, 200, fake._issue())

    def _cover_dimensions(self, entry: dict[str, Any], body: Any, job_id: str | None, url: Any) -> None:
        try:
            spec = parse_pod_package(str(body["pod_package_id"]))
            pages = int(body["interior_page_count"])
        except (KeyError, TypeError, ValueError):
            self._send(entry, 400, {"pod_package_id": ["Invalid pod_package_id."]})
            return
        w, h = cover_size_pt(spec, pages)
        unit = body.get("unit") or "pt"
        factor = {"pt": 1.0, "inch": 1 / 72, "mm": 25.4 / 72}[unit]
        self._send(entry, 201, {"width": f"{w * factor:.3f}", "height": f"{h * factor:.3f}", "unit": unit})

    def _create_job(self, entry: dict[str, Any], body: Any, job_id: str | None, url: Any) -> None:
        fake = self.owner
        errors = fake._validate_body(body)
        if errors:
            self._send(entry, 400, errors)
            return
        job = fake._create(body)
        with fake._lock:
            hold, fake._hold = fake._hold, None
        if hold is not None:
            seconds, created = hold
            created.set()  # the job exists now; the reply is held back
            release = fake._release
            release.wait(seconds)
        self._send(entry, 201, job)

    def _list_jobs(self, entry: dict[str, Any], body: Any, job_id: str | None, url: Any) -> None:
        fake = self.owner
        q = parse_qs(url.query)
        search = (q.get("search") or [""])[0]
        page = int((q.get("page") or ["1"])[0])
        size = min(int((q.get("page_size") or ["100"])[0]), fake.max_page_size)
        with fake._lock:
            for jid in list(fake.jobs):
                fake._settle(jid)
            hits = [copy.deepcopy(j) for j in sorted(fake.jobs.values(), key=lambda j: j["id"])
                    if not search or search in json.dumps([j["id"], j["external_id"],
                                                           [li["external_id"] for li in j["line_items"]]])]
        chunk = hits[(page - 1) * size: page * size]
        nxt = None
        if page * size < len(hits):
            nxt = f"{fake.base_url}/print-jobs/?{urlencode({'search': search, 'page': page + 1, 'page_size': size})}"
        self._send(entry, 200, {"count": len(hits), "next": nxt, "previous": None, "results": chunk})

    def _get_job(self, entry: dict[str, Any], body: Any, job_id: str | None, url: Any) -> None:
        fake = self.owner
        with fake._lock:
            if job_id not in fake.jobs:
                job = None
            else:
                fake._settle(job_id)
                job = copy.deepcopy(fake.jobs[job_id])
        if job is None:
            self._send(entry, 404, {"detail": "Not found."})
        else:
            self._send(entry, 200, job)

    def _job_status(self, entry: dict[str, Any], body: Any, job_id: str | None, url: Any) -> None:
        fake = self.owner
        with fake._lock:
            job = fake.jobs.get(job_id or "")
            if job is not None:
                fake._settle(job_id or "")
            status = copy.deepcopy(job["status"]) if job else None
        if status is None:
            self._send(entry, 404, {"detail": "Not found."})
        else:
            self._send(entry, 200, status)

    def _cancel_job(self, entry: dict[str, Any], body: Any, job_id: str | None, url: Any) -> None:
        fake = self.owner
        with fake._lock:
            job = fake.jobs.get(job_id or "")
            if job is None:
                code, payload = 404, {"detail": "Not found."}
            elif (body or {}).get("name") != "CANCELED":
                code, payload = 400, {"name": ["Only CANCELED can be set."]}
            elif job["status"]["name"] not in ("CREATED", "UNPAID", "REJECTED", "PRODUCTION_DELAYED"):
                code, payload = 400, {"detail": f"A print job in {job['status']['name']} cannot be canceled."}
            else:
                fake._set(job, "CANCELED", "Canceled on request")
                code, payload = 200, copy.deepcopy(job["status"])
        self._send(entry, code, payload)

    def _send(self, entry: dict[str, Any], status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        entry["status"] = status
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, str(v))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


FakeLulu.handler = _Handler
