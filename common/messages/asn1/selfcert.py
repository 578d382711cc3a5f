"""telekey's self-issued certificate request profile (seed 004; docs/protocol.md §6)."""

from pyasn1.type import char, namedtype, univ
from pyasn1_modules.rfc5280 import SubjectPublicKeyInfo

from common.messages.base import explicit as x
from common.messages.primitives import Int32, KerberosTime

NT = namedtype.NamedType
OPT = namedtype.OptionalNamedType


class DeliveredKey(univ.Sequence):
    """DeliveredKey ::= SEQUENCE {
        publicKey          [0] SubjectPublicKeyInfo,
        encryptedKey       [1] OCTET STRING,  -- AES-256 key, RSA PKCS#1 v1.5 to the factory key
        wrappedPrivateKey  [2] OCTET STRING } -- PKCS#8 under that key, RFC 5649 key wrap"""

    componentType = namedtype.NamedTypes(
        NT("publicKey", x(0, SubjectPublicKeyInfo())),
        NT("encryptedKey", x(1, univ.OctetString())),
        NT("wrappedPrivateKey", x(2, univ.OctetString())),
    )


class SelfCertProfile(univ.Sequence):
    """SelfCertProfile ::= SEQUENCE {
        version       [0] INTEGER,          -- 1
        notBefore     [1] KerberosTime,
        notAfter      [2] KerberosTime,
        networkId     [3] UTF8String,       -- the operator network (realm)
        deviceId      [4] UTF8String,       -- the device's MAC address
        keyAlgorithm  [5] INTEGER OPTIONAL, -- 1 ECDSA P-256 (default), 2 RSA-2048
        deliveredKey  [6] DeliveredKey OPTIONAL  -- a key pair made by the server
    }"""

    componentType = namedtype.NamedTypes(
        NT("version", x(0, Int32())),
        NT("notBefore", x(1, KerberosTime())),
        NT("notAfter", x(2, KerberosTime())),
        NT("networkId", x(3, char.UTF8String())),
        NT("deviceId", x(4, char.UTF8String())),
        OPT("keyAlgorithm", x(5, Int32())),
        OPT("deliveredKey", x(6, DeliveredKey())),
    )
