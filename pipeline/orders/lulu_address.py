"""A shipping address in Lulu's fields, checked against Lulu's published schema before anything is
sent (https://api.lulu.com/docs/, its OpenAPI file openapi_public.yml, "Print-Jobs_create")."""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from pipeline.kernel.errors import PermanentStepError

# Countries without postcodes, where a missing one is not an error.
_NO_POSTCODE = {"AE", "HK", "MO", "QA", "JM", "BS", "BZ", "FJ", "GH", "TV"}
# Lulu's create-print-job schema, shipping_address (https://api.lulu.com/docs/, its OpenAPI file openapi_public.yml,
# "Print-Jobs_create"): required name, street1, city, country_code, postcode, phone_number and
# email; country_code 2 letters; postcode at most 64; phone_number at most 20 and matching
# PHONE_PATTERN; state_code (2 or 3 letters, ISO 3166-2) "required for some countries (e.g. US,
# MX, CA, AU)"; recipient_tax_id "required for shipping addresses to Brazil, Chile, and Mexico".
# "If neither the account nor the shipping address contain a phone number, the Print-Job can
# not be created" (the guide's "Create a Print-Job"): LULU_DEFAULT_PHONE_NUMBER stands for the
# account's default, which the API does not show us.
STATE_REQUIRED = {"US", "CA", "AU", "MX"}
TAX_ID_REQUIRED = {"BR", "CL", "MX"}
PHONE_PATTERN = re.compile(r"^\+?[\d\s\-./()]{8,20}$")
_MAX_LEN = {"postcode": 64, "phone_number": 20}
_MAX_OTHER = 255  # no limit in Lulu's schema: ours, so a runaway value is refused, never truncated


def lulu_address(raw: Any, *, email: str | None = None, default_phone: str | None = None) -> dict[str, str]:
    """The order's shipping_address in Lulu's fields, complete as Lulu's schema requires, or
    PermanentStepError saying what to correct (before anything is sent to Lulu).

    Accepts Lulu's own field names and Stripe's shipping shape (``{"name", "phone", "address":
    {"line1", "postal_code", ...}}``). ``email``: used when the address has none (the parent's,
    users.email); ``default_phone``: when it has no phone (LULU_DEFAULT_PHONE_NUMBER)."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raw = None
    if not isinstance(raw, Mapping):
        raise PermanentStepError("The order has no shipping address; add one and retry the order.")
    nested: Mapping[str, Any] = raw["address"] if isinstance(raw.get("address"), Mapping) else {}
    top: Mapping[str, Any] = raw

    def pick(*names: str) -> str:
        for n in names:
            for src in (top, nested):
                v = src.get(n)
                if isinstance(v, (str, int)) and str(v).strip():
                    return " ".join(str(v).split())
        return ""

    out = {
        "name": pick("name", "full_name"), "organization": pick("organization", "company"),
        "street1": pick("street1", "line1", "address_line1", "address1"),
        "street2": pick("street2", "line2", "address_line2", "address2"),
        "city": pick("city", "locality", "town"), "state_code": pick("state_code", "state", "region"),
        "postcode": pick("postcode", "postal_code", "zip", "zip_code"),
        "country_code": pick("country_code", "country").upper(),
        "phone_number": pick("phone_number", "phone") or (default_phone or ""),
        "email": pick("email") or " ".join((email or "").split()),
        "recipient_tax_id": pick("recipient_tax_id", "tax_id"),
    }
    country = out["country_code"]
    missing = [k for k in ("street1", "city", "country_code") if not out[k]]
    if not out["name"] and not out["organization"]:
        missing.insert(0, "name")
    if not out["postcode"] and country not in _NO_POSTCODE:
        missing.append("postcode")
    if country in STATE_REQUIRED and not out["state_code"]:
        missing.append(f"state_code, required for {country}")
    if country in TAX_ID_REQUIRED and not out["recipient_tax_id"]:
        missing.append(f"recipient_tax_id, required for {country}")
    if not out["phone_number"]:
        missing.append("phone_number (carriers need one; or set LULU_DEFAULT_PHONE_NUMBER)")
    if not out["email"]:
        missing.append("email")
    if missing:
        raise PermanentStepError(f"The shipping address is incomplete (missing {', '.join(missing)}); "
                                 "correct it and retry the order.")
    problems: list[str] = []
    if len(country) != 2 or not country.isalpha():
        raise PermanentStepError(f"The shipping address's country must be a 2-letter code (got {country[:20]!r}).")
    state = out["state_code"].upper()
    if state.startswith(f"{country}-"):  # the full ISO 3166-2 form, "US-NC"
        state = state[len(country) + 1:]
    if state and not (2 <= len(state) <= 3 and state.isalnum()):
        if country in STATE_REQUIRED:
            problems.append(f"state_code must be the 2 or 3 letter code (ISO 3166-2), got {out['state_code'][:40]!r}")
        state = ""  # optional elsewhere: a region's name is not a code, and the rest ships
    out["state_code"] = state
    if not PHONE_PATTERN.match(out["phone_number"]):
        problems.append(f"phone_number must be 8 to 20 digits, spaces or +-./() (got {len(out['phone_number'])} "
                        "characters)")
    if "@" not in out["email"] or len(out["email"]) > _MAX_OTHER:
        problems.append("email is not an email address")
    for k, v in out.items():
        limit = _MAX_LEN.get(k, _MAX_OTHER)
        if len(v) > limit and k not in ("phone_number", "email"):
            problems.append(f"{k} is too long ({len(v)} characters; at most {limit})")
    if problems:
        raise PermanentStepError(f"The shipping address cannot be shipped by Lulu: {'; '.join(problems)}; "
                                 "correct it and retry the order.")
    return {k: v for k, v in out.items() if v}

