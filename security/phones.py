"""Phone numbers: parsed and validated with ``phonenumbers``, stored in E.164."""

from __future__ import annotations

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType

from core.errors import ValidationFailed

DEFAULT_REGION = "CN"
_MOBILE_TYPES = {PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE}


def normalize_phone(raw: str, field: str = "phone") -> str:
    """``"+86 138 0013 8000"`` or ``"13800138000"`` → ``"+8613800138000"``.

    Raises ``ValidationFailed`` (code ``invalid_phone``) for anything that is not a valid mobile number.
    """
    try:
        parsed = phonenumbers.parse(raw, DEFAULT_REGION)
    except NumberParseException as exc:
        raise ValidationFailed.field(field, "invalid_phone", "Not a phone number.") from exc
    if not phonenumbers.is_valid_number(parsed) or phonenumbers.number_type(parsed) not in _MOBILE_TYPES:
        raise ValidationFailed.field(field, "invalid_phone", "Not a valid mobile phone number.")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
