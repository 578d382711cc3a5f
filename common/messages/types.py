"""RFC 4120 §5.2 basic types as frozen dataclasses: names, addresses, keys, checksums,
encrypted data, authorization data, PA-DATA and the other small SEQUENCEs messages share."""

from dataclasses import dataclass
from datetime import datetime

from common.codes import NameType
from common.messages.asn1 import rfc4120 as asn1
from common.messages.base import asn1_type


@asn1_type(asn1.PrincipalName)
@dataclass(frozen=True, slots=True)
class PrincipalName:
    name_type: int
    name_string: tuple[str, ...]

    @classmethod
    def parse(cls, text: str, name_type: int = NameType.NT_PRINCIPAL) -> "PrincipalName":
        """A name from its components joined with '/' (no realm), e.g. 'sigctl/sc1.example.test'."""
        return cls(int(name_type), tuple(text.split("/")))

    def __str__(self) -> str:
        return "/".join(self.name_string)


@asn1_type(asn1.HostAddress)
@dataclass(frozen=True, slots=True)
class HostAddress:
    addr_type: int
    address: bytes


@asn1_type(asn1.AuthorizationDataEntry)
@dataclass(frozen=True, slots=True)
class AuthorizationDataEntry:
    ad_type: int
    ad_data: bytes


AuthorizationData = tuple[AuthorizationDataEntry, ...]


@asn1_type(asn1.PA_DATA)
@dataclass(frozen=True, slots=True)
class PaData:
    padata_type: int
    padata_value: bytes


@asn1_type(asn1.EncryptedData)
@dataclass(frozen=True, slots=True)
class EncryptedData:
    etype: int
    kvno: int | None
    cipher: bytes


@asn1_type(asn1.EncryptionKey)
@dataclass(frozen=True, slots=True)
class EncryptionKey:
    keytype: int
    keyvalue: bytes

    def __repr__(self) -> str:  # never show key bytes
        return f"EncryptionKey(keytype={self.keytype})"


@asn1_type(asn1.Checksum)
@dataclass(frozen=True, slots=True)
class Checksum:
    cksumtype: int
    checksum: bytes


@asn1_type(asn1.TransitedEncoding)
@dataclass(frozen=True, slots=True)
class TransitedEncoding:
    tr_type: int
    contents: bytes


@asn1_type(asn1.LastReqEntry)
@dataclass(frozen=True, slots=True)
class LastReqEntry:
    lr_type: int
    lr_value: datetime


@asn1_type(asn1.TypedDataEntry)
@dataclass(frozen=True, slots=True)
class TypedDataEntry:
    data_type: int
    data_value: bytes | None


def find_padata(padata: tuple[PaData, ...] | None, padata_type: int) -> PaData | None:
    """The first PA-DATA of `padata_type` (searching the list, never assuming its position)."""
    for item in padata or ():
        if item.padata_type == padata_type:
            return item
    return None
