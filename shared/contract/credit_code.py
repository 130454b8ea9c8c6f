"""统一社会信用代码 (unified social credit code) check digit, GB 32100-2015."""

from __future__ import annotations

# The code's alphabet: digits and upper-case letters without I, O, Z, S, V.
ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_VALUE = {ch: i for i, ch in enumerate(ALPHABET)}
_WEIGHTS = [pow(3, i, 31) for i in range(17)]


def check_char(first17: str) -> str:
    """The 18th character for the first 17 (raises ValueError on a character outside the set)."""
    total = sum(_VALUE[ch] * w for ch, w in zip(first17, _WEIGHTS, strict=True))
    return ALPHABET[(31 - total % 31) % 31]


def credit_code_problem(code: str) -> str | None:
    """Why `code` is not a valid credit code, or None when it is."""
    if len(code) != 18:
        return f"must be 18 characters, got {len(code)} / 应为18位"
    bad = sorted({ch for ch in code if ch not in _VALUE})
    if bad:
        return f"characters {''.join(bad)!r} are not allowed (I, O, S, V, Z and lower case never occur) / 含非法字符"
    expected = check_char(code[:17])
    if code[17] != expected:
        return f"check digit is {code[17]!r}, expected {expected!r} (GB 32100) / 校验码错误"
    return None


def make_credit_code(first17: str) -> str:
    """A valid code from 17 characters: used by the sample generator and tests."""
    return first17 + check_char(first17)
