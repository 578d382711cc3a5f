"""RFC 4120 §5.2 primitive types as pyasn1 schemas, and the one KerberosTime format."""

import functools
from datetime import UTC, datetime

from pyasn1.type import char, constraint, univ, useful

from common.errors import MalformedMessage

FLAGS_BITS = 32


class Int32(univ.Integer):
    """RFC 4120 §5.2.4 Int32. Every INTEGER telekey decodes has a range: a value of thousands
    of digits is refused here, never carried into code that would format it."""

    subtypeSpec = constraint.ValueRangeConstraint(-(2**31), 2**31 - 1)


class UInt32(univ.Integer):
    """RFC 4120 §5.2.4 UInt32 (nonces, kvno, sequence numbers). Leniency, as MIT's decoder:
    negative Int32 values are accepted too, since some clients encode these fields signed."""

    subtypeSpec = constraint.ValueRangeConstraint(-(2**31), 2**32 - 1)


class Microseconds(univ.Integer):
    """RFC 4120 §5.2.4 Microseconds (0..999999)."""

    subtypeSpec = constraint.ValueRangeConstraint(0, 999_999)


class CertificateSerialNumber(univ.Integer):
    """RFC 5280 §4.1.2.2: at most 20 octets. Leniency: 21 content octets (a 20-octet positive
    value needs a leading zero) and negative serials, which deployed CAs have issued."""

    subtypeSpec = constraint.ValueRangeConstraint(-(2**159), 2**160 - 1)


class KerberosFlags(univ.BitString):
    """RFC 4120 §5.2.8 KerberosFlags, BIT STRING (SIZE (32..MAX)); Python value is an int of
    32 bits, bit 0 the most significant. telekey sends exactly 32 bits.

    Leniency: a string of any length is accepted, as MIT does (one deployed client sends a
    9-bit KDCOptions, `03 03 07 50 80`): a shorter one is padded with zero bits, a longer one's
    bits beyond 31 are dropped (`flags_value`). Such a message does not re-encode to the same
    bytes, so what is checked over a received body (PKINIT paChecksum, the TGS authenticator
    checksum) uses the bytes as received.
    """


def flags_value(bits: int, nbits: int) -> int:
    """The 32-bit flags int of a BIT STRING of `nbits` bits whose value is `bits`."""
    if nbits <= FLAGS_BITS:
        return bits << (FLAGS_BITS - nbits)
    return bits >> (nbits - FLAGS_BITS)


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
