"""ISO 4217 currency codes a funds record or a rates table may name (币种代码).

The circulating currencies of ISO 4217 (list of 2024, with XCG and ZWG): fund codes (e.g.
BOV, CLF), precious metals (XAU) and test codes (XTS, XXX) are no money a project receives.
A common non-code gets a hint rather than a bare refusal: `RMB` → use CNY.
"""

from __future__ import annotations

_CODES = """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN
    BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR
    FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD
    JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT
    MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG
    QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB
    TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VED VES VND VUV WST XAF XCD XCG XOF
    XPF YER ZAR ZMW ZWG ZWL
"""
ISO_4217 = frozenset(_CODES.split())

# Names units' systems use that are not ISO 4217 codes, and the code to use instead.
ALIASES = {"RMB": "CNY", "CNH": "CNY", "YUAN": "CNY", "NTD": "TWD", "HKG": "HKD"}


def currency_problem(code: str) -> str | None:
    """Why `code` is not a currency a funds record may be in, or None."""
    if code in ISO_4217:
        return None
    use = ALIASES.get(code.upper())
    if use:
        return f"{code!r} is not an ISO 4217 code: use {use} / 请使用{use}"
    return f"{code!r} is not an ISO 4217 currency code / 不是ISO 4217币种代码"
