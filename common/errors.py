"""Typed errors. Every KerberosError subclass carries the KRB-ERROR code (RFC 4120 §7.5.9) the
peer is told; MalformedMessage is what every decoder raises for bad bytes."""

from typing import ClassVar

from common.codes import ErrorCode


class KerberosError(Exception):
    """A failure the peer is told about. Subclass it; never raise it directly."""

    code: ClassVar[ErrorCode] = ErrorCode.KRB_ERR_GENERIC

    def __init__(self, status: str, detail: str = "", *, e_data: bytes | None = None) -> None:
        super().__init__(f"{status}: {detail}" if detail else status)
        self.status = status  # stable tag for logs and e-text, e.g. "CLIENT_NOT_FOUND"
        self.detail = detail  # logs only; never sent to the peer
        self.e_data = e_data  # KRB-ERROR e-data, e.g. METHOD-DATA with PREAUTH_REQUIRED


class MalformedMessage(KerberosError):
    """Bytes that are not a valid DER encoding of the expected message (or file record)."""

    code = ErrorCode.KRB_ERR_GENERIC


class FieldTooLong(KerberosError):
    """RFC 4120 §7.2.2: a TCP record length with the high bit set or over the cap."""

    code = ErrorCode.KRB_ERR_FIELD_TOOLONG


class ResponseTooBig(KerberosError):
    """RFC 4120 §7.2.1: a reply that does not fit the UDP size limit; the client retries on TCP."""

    code = ErrorCode.KRB_ERR_RESPONSE_TOO_BIG


class IntegrityError(KerberosError):
    """RFC 3961 §3: decryption failed its integrity check (wrong key, usage or tampered data)."""

    code = ErrorCode.KRB_AP_ERR_BAD_INTEGRITY


class ModifiedError(KerberosError):
    """RFC 4120 §3.2.3: a message or checksum did not verify."""

    code = ErrorCode.KRB_AP_ERR_MODIFIED


class EncTypeNotSupported(KerberosError):
    """RFC 4120 §3.1.3: none of the offered encryption types is supported."""

    code = ErrorCode.KDC_ERR_ETYPE_NOSUPP


class ChecksumTypeNotSupported(KerberosError):
    """RFC 4120 §7.5.9: the checksum type is not supported."""

    code = ErrorCode.KDC_ERR_SUMTYPE_NOSUPP


class ClockSkew(KerberosError):
    """RFC 4120 §3.2.3: the peer's clock is outside the allowed skew."""

    code = ErrorCode.KRB_AP_ERR_SKEW


class MasterKeyError(Exception):
    """A long-term key at rest could not be wrapped or unwrapped under the master key
    (common/crypto/master_key.py). Not a KerberosError: it never reaches the wire. It is an
    operator's problem (a master key version missing from the stash or token, a damaged row
    or backup), so the KDC logs it and answers the request KRB_ERR_GENERIC "INTERNAL" like
    any other fault of its own."""

    def __init__(self, status: str, detail: str = "") -> None:
        super().__init__(f"{status}: {detail}" if detail else status)
        self.status = status  # stable tag, e.g. "UNKNOWN_MKVNO"
        self.detail = detail


class UnknownMasterKeyVersion(MasterKeyError):
    """A key wrapped under a master key version (mkvno) the keyring does not hold."""


class MasterKeyIntegrityError(MasterKeyError):
    """RFC 5649 §3: the unwrapped block failed its integrity check (wrong master key, or the
    wrapped key was changed)."""


class MasterKeyBackupError(MasterKeyError):
    """A master key stash or backup file that is malformed, is for another service, or whose
    passphrase is wrong."""
