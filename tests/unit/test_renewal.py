from datetime import UTC, datetime, timedelta

from common.kerberos.renewal import clock_offset, renewal_due
from common.messages.krb_error import KrbError
from common.messages.types import PrincipalName

END = datetime(2026, 12, 8, 12, 0, tzinfo=UTC)


def test_rfc4682_defaults():
    assert renewal_due(END, is_tgt=True) == END - timedelta(minutes=15)
    assert renewal_due(END, is_tgt=False) == END - timedelta(minutes=10)
    assert renewal_due(END, is_tgt=False, tgs_grace=timedelta(minutes=1)) == \
        END - timedelta(minutes=1)


def test_offset_from_skew_error():
    error = KrbError(5, 30, None, None, datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC), 250_000,
                     37, None, None, "R", PrincipalName(2, ("krbtgt", "R")), None, None)
    ours = datetime(2026, 12, 1, 12, 15, 0, tzinfo=UTC)
    assert clock_offset(error, ours) == timedelta(minutes=-15, microseconds=250_000)
