"""When a device renews its tickets (RFC 4682 PKTC-IETF-MTA-MIB defaults): PKINIT again
`pkinit_grace` (15 min) before a TGT ends, TGS `tgs_grace` (10 min) before a service ticket
ends; and the clock offset a device learns from a KDC's KRB_AP_ERR_SKEW (RFC 4120 §7.5.9:
stime/susec are the KDC's time)."""

from datetime import UTC, datetime, timedelta

from common.messages.krb_error import KrbError

PKINIT_GRACE = timedelta(minutes=15)
TGS_GRACE = timedelta(minutes=10)


def renewal_due(endtime: datetime, *, is_tgt: bool, pkinit_grace: timedelta = PKINIT_GRACE,
                tgs_grace: timedelta = TGS_GRACE) -> datetime:
    """The moment the ticket ending at `endtime` should be replaced."""
    return endtime - (pkinit_grace if is_tgt else tgs_grace)


def clock_offset(error: KrbError, now: datetime) -> timedelta:
    """KDC time minus our time, from a KRB-ERROR's stime/susec (apply: now + offset)."""
    kdc_time = error.stime.replace(tzinfo=UTC) + timedelta(microseconds=error.susec)
    return kdc_time - now
