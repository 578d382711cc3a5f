"""RFC 4120 §5.2 primitive types as pyasn1 schemas, and the one KerberosTime format."""

import functools
from datetime import UTC, datetime

from pyasn1.type import char, univ, useful

from common.errors import MalformedMessage

FLAGS_BITS = 32


class KerberosFlags(univ.BitString):
    """RFC 4120 §5.2.8 KerberosFlags, BIT STRING (SIZE (32..MAX)); Python value is an int.

    telekey accepts exactly 32 bits, what every implementation sends: a longer string could not
    be re-encoded byte-identically from the int, and checksums over received bodies need that.
    """


class KerberosString(char.GeneralString):
    """RFC 4120 §5.2.1 KerberosString; telekey reads and writes it as UTF-8 (as MIT does)."""

    encoding = "utf-8"


class KerberosTime(useful.GeneralizedTime):
    """RFC 4120 §5.2.3 KerberosTime: GeneralizedTime "YYYYMMDDHHMMSSZ", no fractions."""


# Both directions are kept for the last few hundred values: a request's times, and the
# times of its reply (authtime, starttime, endtime...), are mostly the same few seconds.
@functools.lru_cache(maxsize=512)
def parse_kerberos_time(text: str) -> datetime:
    """Parse the only KerberosTime form DER allows (RFC 4120 §5.2.3)."""
    if len(text) != 15 or text[-1] != "Z" or not text[:14].isdigit():
        raise MalformedMessage("BAD_TIME", repr(text))
    try:
        # ISO 8601 basic format, which fromisoformat reads (in C) since Python 3.11; the
        # trailing Z makes the result aware UTC.
        return datetime.fromisoformat(text[:8] + "T" + text[8:])
    except ValueError as exc:
        raise MalformedMessage("BAD_TIME", repr(text)) from exc


@functools.lru_cache(maxsize=512)
def format_kerberos_time(when: datetime) -> str:
    """KerberosTime text for an aware datetime (converted to UTC, fractions dropped)."""
    if when.tzinfo is None:
        raise TypeError("KerberosTime needs an aware datetime")
    t = when.astimezone(UTC)
    # Not strftime: glibc writes year 26 as "26", not "0026".
    return f"{t.year:04d}{t.month:02d}{t.day:02d}{t.hour:02d}{t.minute:02d}{t.second:02d}Z"
