"""RFC 4120 §5 and Appendix A (KerberosV5Spec2, EXPLICIT TAGS), plus the RFC 6806
encrypted-pa-data field of EncKDCRepPart and the MS-KILE KERB-PA-PAC-REQUEST."""

from pyasn1.type import namedtype, univ

from common.messages.base import application
from common.messages.base import explicit as x
from common.messages.primitives import (
    Int32,
    KerberosFlags,
    KerberosString,
    KerberosTime,
    Microseconds,
    UInt32,
)

NT = namedtype.NamedType
OPT = namedtype.OptionalNamedType

Realm = KerberosString


class PrincipalName(univ.Sequence):
    componentType = namedtype.NamedTypes(
        NT("name-type", x(0, Int32())),
        NT("name-string", x(1, univ.SequenceOf(componentType=KerberosString()))),
    )


class HostAddress(univ.Sequence):
    componentType = namedtype.NamedTypes(
        NT("addr-type", x(0, Int32())),
        NT("address", x(1, univ.OctetString())),
    )


class HostAddresses(univ.SequenceOf):
    componentType = HostAddress()


class AuthorizationDataEntry(univ.Sequence):
    """One element of AuthorizationData (anonymous in the RFC)."""

    componentType = namedtype.NamedTypes(
        NT("ad-type", x(0, Int32())),
        NT("ad-data", x(1, univ.OctetString())),
    )


class AuthorizationData(univ.SequenceOf):
    componentType = AuthorizationDataEntry()


AD_IF_RELEVANT = AuthorizationData


class PA_DATA(univ.Sequence):
    componentType = namedtype.NamedTypes(
        NT("padata-type", x(1, Int32())),
        NT("padata-value", x(2, univ.OctetString())),
    )


class METHOD_DATA(univ.SequenceOf):
    componentType = PA_DATA()


class EncryptedData(univ.Sequence):
    componentType = namedtype.NamedTypes(
        NT("etype", x(0, Int32())),
        OPT("kvno", x(1, UInt32())),
        NT("cipher", x(2, univ.OctetString())),
    )


class EncryptionKey(univ.Sequence):
    componentType = namedtype.NamedTypes(
        NT("keytype", x(0, Int32())),
        NT("keyvalue", x(1, univ.OctetString())),
    )


class Checksum(univ.Sequence):
    componentType = namedtype.NamedTypes(
        NT("cksumtype", x(0, Int32())),
        NT("checksum", x(1, univ.OctetString())),
    )


class Ticket(univ.Sequence):
    tagSet = application(1)
    componentType = namedtype.NamedTypes(
        NT("tkt-vno", x(0, Int32())),
        NT("realm", x(1, Realm())),
        NT("sname", x(2, PrincipalName())),
        NT("enc-part", x(3, EncryptedData())),
    )


class TransitedEncoding(univ.Sequence):
    componentType = namedtype.NamedTypes(
        NT("tr-type", x(0, Int32())),
        NT("contents", x(1, univ.OctetString())),
    )


class EncTicketPart(univ.Sequence):
    tagSet = application(3)
    componentType = namedtype.NamedTypes(
        NT("flags", x(0, KerberosFlags())),
        NT("key", x(1, EncryptionKey())),
        NT("crealm", x(2, Realm())),
        NT("cname", x(3, PrincipalName())),
        NT("transited", x(4, TransitedEncoding())),
        NT("authtime", x(5, KerberosTime())),
        OPT("starttime", x(6, KerberosTime())),
        NT("endtime", x(7, KerberosTime())),
        OPT("renew-till", x(8, KerberosTime())),
        OPT("caddr", x(9, HostAddresses())),
        OPT("authorization-data", x(10, AuthorizationData())),
    )


class KDC_REQ_BODY(univ.Sequence):
    componentType = namedtype.NamedTypes(
        NT("kdc-options", x(0, KerberosFlags())),
        OPT("cname", x(1, PrincipalName())),
        NT("realm", x(2, Realm())),
        OPT("sname", x(3, PrincipalName())),
        OPT("from", x(4, KerberosTime())),
        NT("till", x(5, KerberosTime())),
        OPT("rtime", x(6, KerberosTime())),
        NT("nonce", x(7, UInt32())),
        NT("etype", x(8, univ.SequenceOf(componentType=Int32()))),
        OPT("addresses", x(9, HostAddresses())),
        OPT("enc-authorization-data", x(10, EncryptedData())),
        OPT("additional-tickets", x(11, univ.SequenceOf(componentType=Ticket()))),
    )


class KDC_REQ(univ.Sequence):
    componentType = namedtype.NamedTypes(
        NT("pvno", x(1, Int32())),
        NT("msg-type", x(2, Int32())),
        OPT("padata", x(3, univ.SequenceOf(componentType=PA_DATA()))),
        NT("req-body", x(4, KDC_REQ_BODY())),
    )


class AS_REQ(KDC_REQ):
    tagSet = application(10)


class TGS_REQ(KDC_REQ):
    tagSet = application(12)


class KDC_REP(univ.Sequence):
    componentType = namedtype.NamedTypes(
        NT("pvno", x(0, Int32())),
        NT("msg-type", x(1, Int32())),
        OPT("padata", x(2, univ.SequenceOf(componentType=PA_DATA()))),
        NT("crealm", x(3, Realm())),
        NT("cname", x(4, PrincipalName())),
        NT("ticket", x(5, Ticket())),
        NT("enc-part", x(6, EncryptedData())),
    )


class AS_REP(KDC_REP):
    tagSet = application(11)


class TGS_REP(KDC_REP):
    tagSet = application(13)


class LastReqEntry(univ.Sequence):
    """One element of LastReq (anonymous in the RFC)."""

    componentType = namedtype.NamedTypes(
        NT("lr-type", x(0, Int32())),
        NT("lr-value", x(1, KerberosTime())),
    )


class LastReq(univ.SequenceOf):
    componentType = LastReqEntry()


class EncKDCRepPart(univ.Sequence):
    componentType = namedtype.NamedTypes(
        NT("key", x(0, EncryptionKey())),
        NT("last-req", x(1, LastReq())),
        NT("nonce", x(2, UInt32())),
        OPT("key-expiration", x(3, KerberosTime())),
        NT("flags", x(4, KerberosFlags())),
        NT("authtime", x(5, KerberosTime())),
        OPT("starttime", x(6, KerberosTime())),
        NT("endtime", x(7, KerberosTime())),
        OPT("renew-till", x(8, KerberosTime())),
        NT("srealm", x(9, Realm())),
        NT("sname", x(10, PrincipalName())),
        OPT("caddr", x(11, HostAddresses())),
        OPT("encrypted-pa-data", x(12, univ.SequenceOf(componentType=PA_DATA()))),
    )


class EncASRepPart(EncKDCRepPart):
    tagSet = application(25)


class EncTGSRepPart(EncKDCRepPart):
    tagSet = application(26)


class AP_REQ(univ.Sequence):
    tagSet = application(14)
    componentType = namedtype.NamedTypes(
        NT("pvno", x(0, Int32())),
        NT("msg-type", x(1, Int32())),
        NT("ap-options", x(2, KerberosFlags())),
        NT("ticket", x(3, Ticket())),
        NT("authenticator", x(4, EncryptedData())),
    )


class Authenticator(univ.Sequence):
    tagSet = application(2)
    componentType = namedtype.NamedTypes(
        NT("authenticator-vno", x(0, Int32())),
        NT("crealm", x(1, Realm())),
        NT("cname", x(2, PrincipalName())),
        OPT("cksum", x(3, Checksum())),
        NT("cusec", x(4, Microseconds())),
        NT("ctime", x(5, KerberosTime())),
        OPT("subkey", x(6, EncryptionKey())),
        OPT("seq-number", x(7, UInt32())),
        OPT("authorization-data", x(8, AuthorizationData())),
    )


class AP_REP(univ.Sequence):
    tagSet = application(15)
    componentType = namedtype.NamedTypes(
        NT("pvno", x(0, Int32())),
        NT("msg-type", x(1, Int32())),
        NT("enc-part", x(2, EncryptedData())),
    )


class EncAPRepPart(univ.Sequence):
    tagSet = application(27)
    componentType = namedtype.NamedTypes(
        NT("ctime", x(0, KerberosTime())),
        NT("cusec", x(1, Microseconds())),
        OPT("subkey", x(2, EncryptionKey())),
        OPT("seq-number", x(3, UInt32())),
    )


class KRB_SAFE_BODY(univ.Sequence):
    componentType = namedtype.NamedTypes(
        NT("user-data", x(0, univ.OctetString())),
        OPT("timestamp", x(1, KerberosTime())),
        OPT("usec", x(2, Microseconds())),
        OPT("seq-number", x(3, UInt32())),
        NT("s-address", x(4, HostAddress())),
        OPT("r-address", x(5, HostAddress())),
    )


class KRB_SAFE(univ.Sequence):
    tagSet = application(20)
    componentType = namedtype.NamedTypes(
        NT("pvno", x(0, Int32())),
        NT("msg-type", x(1, Int32())),
        NT("safe-body", x(2, KRB_SAFE_BODY())),
        NT("cksum", x(3, Checksum())),
    )


class KRB_PRIV(univ.Sequence):
    tagSet = application(21)
    componentType = namedtype.NamedTypes(
        NT("pvno", x(0, Int32())),
        NT("msg-type", x(1, Int32())),
        # RFC 4120 §5.7.1: there is no [2] tag.
        NT("enc-part", x(3, EncryptedData())),
    )


class EncKrbPrivPart(univ.Sequence):
    tagSet = application(28)
    componentType = namedtype.NamedTypes(
        NT("user-data", x(0, univ.OctetString())),
        OPT("timestamp", x(1, KerberosTime())),
        OPT("usec", x(2, Microseconds())),
        OPT("seq-number", x(3, UInt32())),
        NT("s-address", x(4, HostAddress())),
        OPT("r-address", x(5, HostAddress())),
    )


class KRB_CRED(univ.Sequence):
    tagSet = application(22)
    componentType = namedtype.NamedTypes(
        NT("pvno", x(0, Int32())),
        NT("msg-type", x(1, Int32())),
        NT("tickets", x(2, univ.SequenceOf(componentType=Ticket()))),
        NT("enc-part", x(3, EncryptedData())),
    )


class KrbCredInfo(univ.Sequence):
    componentType = namedtype.NamedTypes(
        NT("key", x(0, EncryptionKey())),
        OPT("prealm", x(1, Realm())),
        OPT("pname", x(2, PrincipalName())),
        OPT("flags", x(3, KerberosFlags())),
        OPT("authtime", x(4, KerberosTime())),
        OPT("starttime", x(5, KerberosTime())),
        OPT("endtime", x(6, KerberosTime())),
        OPT("renew-till", x(7, KerberosTime())),
        OPT("srealm", x(8, Realm())),
        OPT("sname", x(9, PrincipalName())),
        OPT("caddr", x(10, HostAddresses())),
    )


class EncKrbCredPart(univ.Sequence):
    tagSet = application(29)
    componentType = namedtype.NamedTypes(
        NT("ticket-info", x(0, univ.SequenceOf(componentType=KrbCredInfo()))),
        OPT("nonce", x(1, UInt32())),
        OPT("timestamp", x(2, KerberosTime())),
        OPT("usec", x(3, Microseconds())),
        OPT("s-address", x(4, HostAddress())),
        OPT("r-address", x(5, HostAddress())),
    )


class KRB_ERROR(univ.Sequence):
    tagSet = application(30)
    componentType = namedtype.NamedTypes(
        NT("pvno", x(0, Int32())),
        NT("msg-type", x(1, Int32())),
        OPT("ctime", x(2, KerberosTime())),
        OPT("cusec", x(3, Microseconds())),
        NT("stime", x(4, KerberosTime())),
        NT("susec", x(5, Microseconds())),
        NT("error-code", x(6, Int32())),
        OPT("crealm", x(7, Realm())),
        OPT("cname", x(8, PrincipalName())),
        NT("realm", x(9, Realm())),
        NT("sname", x(10, PrincipalName())),
        OPT("e-text", x(11, KerberosString())),
        OPT("e-data", x(12, univ.OctetString())),
    )


class TypedDataEntry(univ.Sequence):
    """One element of TYPED-DATA (anonymous in the RFC)."""

    componentType = namedtype.NamedTypes(
        NT("data-type", x(0, Int32())),
        OPT("data-value", x(1, univ.OctetString())),
    )


class TYPED_DATA(univ.SequenceOf):
    componentType = TypedDataEntry()


class PA_ENC_TS_ENC(univ.Sequence):
    componentType = namedtype.NamedTypes(
        NT("patimestamp", x(0, KerberosTime())),
        OPT("pausec", x(1, Microseconds())),
    )


class ETYPE_INFO2_ENTRY(univ.Sequence):
    componentType = namedtype.NamedTypes(
        NT("etype", x(0, Int32())),
        OPT("salt", x(1, KerberosString())),
        OPT("s2kparams", x(2, univ.OctetString())),
    )


class ETYPE_INFO2(univ.SequenceOf):
    componentType = ETYPE_INFO2_ENTRY()


class KERB_PA_PAC_REQUEST(univ.Sequence):
    """MS-KILE §2.2.3 PA-PAC-REQUEST (padata type 128)."""

    componentType = namedtype.NamedTypes(
        NT("include-pac", x(0, univ.Boolean())),
    )
