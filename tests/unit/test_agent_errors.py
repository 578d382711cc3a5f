"""What `telekey cta login` says when the KDC refuses: the error by its RFC 4120/4556 name and
number, the e-text apart; and which group it falls back to when a KDC lists its DH groups."""

from datetime import UTC, datetime

from common.crypto.dh import known_groups
from common.messages.cms import AlgorithmIdentifier
from common.messages.krb_error import (
    KrbError,
    TypedDataEntry,
    encode_krb_error,
    encode_typed_data,
)
from common.messages.pkinit import (
    DH_PUBLIC_NUMBER,
    DomainParameters,
    encode_domain_parameters,
    encode_td_dh_parameters,
)
from common.messages.types import PrincipalName
from cta.agent import _offered_group, _refusal

NOW = datetime(2026, 12, 6, tzinfo=UTC)


def error(code: int, e_text: str | None = None, e_data: bytes | None = None) -> KrbError:
    return KrbError(5, 30, None, None, NOW, 0, code, None, None, "LAB.TEST",
                    PrincipalName(2, ("krbtgt", "LAB.TEST")), e_text, e_data)


def test_refusal_names_the_error():
    message = str(_refusal(encode_krb_error(error(65, "DH_GROUP_NOT_ACCEPTED"))))
    assert message == ("KDC refused: KDC_ERR_DH_KEY_PARAMETERS_NOT_ACCEPTED (65); "
                       "e-text: DH_GROUP_NOT_ACCEPTED")
    assert str(_refusal(encode_krb_error(error(18)))) == \
        "KDC refused: KDC_ERR_CLIENT_REVOKED (18)"


def test_fallback_takes_the_smallest_listed_group_it_can_do():
    groups = {g.number: g for g in known_groups()}
    params = tuple(AlgorithmIdentifier(DH_PUBLIC_NUMBER, encode_domain_parameters(
        DomainParameters(groups[n].p, groups[n].g, groups[n].q, None, None))) for n in (2, 16, 14))
    listed = encode_typed_data((TypedDataEntry(109, encode_td_dh_parameters(params)),))
    assert _offered_group(error(65, e_data=listed)) == 14  # group 2 is below what we can do
    assert _offered_group(error(65)) is None
