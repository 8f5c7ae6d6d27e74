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


# What support staff type for "the number ending in ...": digits, maybe grouped by spaces,
# dashes, dots, slashes or parentheses. With a "+" it is a whole international number, which
# `search_forms` finds exactly.
_TYPED_DIGITS = re.compile(r"^[\d\s().\-/]+$")
SUFFIX_MIN_DIGITS = 4  # fewer would match a thousandth of all messages or more
# A national number written with its trunk prefix (KZ/RU 8 701 555 01 19, UK 07700 900123,
# DE 0151 ...) is the trunk digit + the national number, and E.164 is +country code + the
# national number: without the trunk digit it is the end of the stored number, whatever the
# country, so no default_region is needed. Likewise 00 + country code + number ends in the
# number. Dropping leading digits only widens a suffix search (every number ending in
# 87015550119 also ends in 7015550119), so it never loses the message meant; it is done only
# from this many digits on, where a leading 0 or 8 is far more likely a prefix than one of the
# last digits.
_PREFIXED_MIN_DIGITS = 8


def search_suffix(raw: str) -> str | None:
    """The digits a stored number must end with for `raw` to name it: the last digits of a
    number (at least SUFFIX_MIN_DIGITS), or a number in national format with or without its
    trunk prefix; None when `raw` is not written that way (letters, a "+")."""
    text = raw.strip()
    if not _TYPED_DIGITS.match(text):
        return None
    digits = re.sub(r"\D", "", text)
    if len(digits) >= _PREFIXED_MIN_DIGITS:
        digits = digits[2:] if digits.startswith("00") else (
            digits[1:] if digits[0] in "08" else digits)
    if not SUFFIX_MIN_DIGITS <= len(digits) <= 15:  # E.164 numbers have at most 15 digits
        return None
    return digits


def mask_phone(number: str) -> str:
    """+77011234567 -> +7701•••••67."""
    keep_head = 5 if number.startswith("+") else 4
    hidden = len(number) - keep_head - 2
    return number if hidden < 3 else number[:keep_head] + "•" * hidden + number[-2:]
