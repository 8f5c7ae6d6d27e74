"""Phone numbers: any common way of writing one -> E.164, with the phonenumbers library."""

from __future__ import annotations

import re

import phonenumbers

_INTL_PREFIX = re.compile(r"^\s*(?:00|011)\s*(?=\d)")
# International digits without "+", as many SMS APIs write them (15551234888).
_MSISDN = re.compile(r"^\d{10,15}$")  # 00 (ITU) and 011 (North America) dialing prefixes


class InvalidPhone(ValueError):
    """The text is not a phone number we can send to; the message says why."""


_REASONS = {
    phonenumbers.ValidationResult.INVALID_COUNTRY_CODE: "unknown country code",
    phonenumbers.ValidationResult.TOO_SHORT: "too short",
    phonenumbers.ValidationResult.TOO_LONG: "too long",
    phonenumbers.ValidationResult.INVALID_LENGTH: "wrong length for its country",
}


def normalize(raw: str, default_region: str = "") -> str:
    """Return the E.164 form (+15551234888) of `raw`, or raise InvalidPhone."""
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidPhone("phone number is empty")
    text = _INTL_PREFIX.sub("+", raw)
    if not default_region and _MSISDN.match(text.strip()):
        text = "+" + text.strip()
    if len(text) > 40:
        raise InvalidPhone("phone number is too long")
    try:
        number = phonenumbers.parse(text, default_region.upper() or None)
    except phonenumbers.NumberParseException as exc:
        if exc.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE:
            hint = "" if default_region else " (write it with +country code)"
            raise InvalidPhone(f"no valid country code{hint}") from exc
        raise InvalidPhone(f"not a phone number: {exc._msg}") from exc
    # Possible, not valid: metadata lags real allocations, and test ranges (+1 555…) must pass.
    result = phonenumbers.is_possible_number_with_reason(number)
    if result not in (phonenumbers.ValidationResult.IS_POSSIBLE,
                      phonenumbers.ValidationResult.IS_POSSIBLE_LOCAL_ONLY):
        raise InvalidPhone(f"not a possible phone number: {_REASONS.get(result, 'invalid')}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def search_forms(raw: str, default_region: str = "") -> str | None:
    """E.164 form for searching, or None when the text is not a phone number."""
    try:
        return normalize(raw, default_region)
    except InvalidPhone:
        return None


def mask_phone(number: str) -> str:
    """+77011234567 -> +7701•••••67."""
    keep_head = 5 if number.startswith("+") else 4
    hidden = len(number) - keep_head - 2
    return number if hidden < 3 else number[:keep_head] + "•" * hidden + number[-2:]
