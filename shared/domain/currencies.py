"""The currencies a course may be priced in: ISO 4217's current codes, kept here.

A code that merely looks like one (`AAA`) would be stored, shown and sent to
the payment provider, which refuses it only at the first payment; checking
the list when the course is published makes that a 422 naming `currency`.

The list is ISO 4217's List One of active codes as of 2026: withdrawn codes are
absent (HRK, SLL, ZWL, CUC, ANG, BGN: the euro, the new leone, ZiG, the
Caribbean guilder replaced them), and so are the codes that name no money a
price is paid in (precious metals, bond-market units, the SDR, fund codes,
the test code XTS and XXX). ISO amends the list a few times a year: a new
currency is one more line here.
"""

from __future__ import annotations

_LIST_ONE = """
AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BHD BIF BMD BND BOB BRL BSD BTN
BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB
EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR
ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD
MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR
PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE
SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU
UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG
"""
ISO_4217 = frozenset(_LIST_ONE.split())

CODES: tuple[str, ...] = tuple(sorted(ISO_4217))
