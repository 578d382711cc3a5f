"""Pre-authentication and authorization data carried inside other messages:
PA-ENC-TIMESTAMP / PA-ENC-TS-ENC and ETYPE-INFO2 (RFC 4120 §5.2.7), PA-PAC-REQUEST
(MS-KILE §2.2.3), AD-IF-RELEVANT (RFC 4120 §5.2.6.1), and PA-FX-FAST presence (RFC 6113 §5.4.2;
telekey does not implement FAST armoring, it only recognises the request)."""

from dataclasses import dataclass
from datetime import datetime

from common.codes import AuthorizationDataType, PaDataType
from common.messages.asn1 import rfc4120 as asn1
from common.messages.base import asn1_type, codec
from common.messages.types import AuthorizationDataEntry, EncryptedData, PaData, find_padata


@asn1_type(asn1.PA_ENC_TS_ENC)
@dataclass(frozen=True, slots=True)
class PaEncTsEnc:
    patimestamp: datetime
    pausec: int | None


@asn1_type(asn1.ETYPE_INFO2_ENTRY)
@dataclass(frozen=True, slots=True)
class EtypeInfo2Entry:
    etype: int
    salt: str | None
    s2kparams: bytes | None


@asn1_type(asn1.KERB_PA_PAC_REQUEST)
@dataclass(frozen=True, slots=True)
class PaPacRequest:
    include_pac: bool


# PA-ENC-TIMESTAMP is an EncryptedData whose plaintext is PA-ENC-TS-ENC (key usage 1).
decode_pa_enc_timestamp, encode_pa_enc_timestamp = codec(asn1.EncryptedData, EncryptedData)
decode_pa_enc_ts_enc, encode_pa_enc_ts_enc = codec(asn1.PA_ENC_TS_ENC, PaEncTsEnc)
decode_etype_info2, encode_etype_info2 = codec(asn1.ETYPE_INFO2, tuple[EtypeInfo2Entry, ...])
decode_pa_pac_request, encode_pa_pac_request = codec(asn1.KERB_PA_PAC_REQUEST, PaPacRequest)
# AuthorizationData, also the contents of an AD-IF-RELEVANT element.
decode_authorization_data, encode_authorization_data = codec(
    asn1.AuthorizationData, tuple[AuthorizationDataEntry, ...])


def wrap_if_relevant(entries: tuple[AuthorizationDataEntry, ...]) -> AuthorizationDataEntry:
    """One AD-IF-RELEVANT element (ad-type 1) holding `entries` (RFC 4120 §5.2.6.1)."""
    return AuthorizationDataEntry(int(AuthorizationDataType.AD_IF_RELEVANT),
                                  encode_authorization_data(entries))


def flatten_authorization_data(
        entries: tuple[AuthorizationDataEntry, ...] | None) -> tuple[AuthorizationDataEntry, ...]:
    """The elements with every AD-IF-RELEVANT container opened (recursively)."""
    out: list[AuthorizationDataEntry] = []
    for entry in entries or ():
        if entry.ad_type == AuthorizationDataType.AD_IF_RELEVANT:
            out.extend(flatten_authorization_data(decode_authorization_data(entry.ad_data)))
        else:
            out.append(entry)
    return tuple(out)


def requests_fast(padata: tuple[PaData, ...] | None) -> bool:
    """True when the request carries PA-FX-FAST (RFC 6113), which telekey does not support."""
    return find_padata(padata, PaDataType.PA_FX_FAST) is not None
