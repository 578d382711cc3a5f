"""telekey's own ASN.1 (documented in docs/protocol.md): the device restriction carried in
tickets as authorization data (local ad-type, inside AD-IF-RELEVANT)."""

from pyasn1.type import char, namedtype, univ

from common.messages.base import explicit as x
from common.messages.primitives import Int32

NT = namedtype.NamedType
OPT = namedtype.OptionalNamedType


class DeviceRestriction(univ.Sequence):
    """DeviceRestriction ::= SEQUENCE {
        state            [0] INTEGER,                  -- 1 = unprovisioned
        allowed-numbers  [1] SEQUENCE OF UTF8String,   -- numbers the device may call
        certificates     [2] SEQUENCE OF OCTET STRING OPTIONAL }
                             -- the DER of the device's certificate chain as the KDC verified
                             -- it, device certificate first, without the anchor"""

    componentType = namedtype.NamedTypes(
        NT("state", x(0, Int32())),
        NT("allowed-numbers", x(1, univ.SequenceOf(componentType=char.UTF8String()))),
        OPT("certificates", x(2, univ.SequenceOf(componentType=univ.OctetString()))),
    )
