"""K_m inside a PKCS#11 token (default profile): a GENERIC_SECRET token object
`telekey-keyserver-km-<kmvno>`, 256 bits, TOKEN, PRIVATE, SENSITIVE, never EXTRACTABLE, SIGN
and nothing else. The token computes K_g = HMAC-SHA256(K_m, g) and CV_m from
HMAC-SHA256(K_m, C_CV) with CKM_SHA256_HMAC, so K_m is in this process only while it is
imported (SoftHSM2 signs HMAC with a generic secret at least as long as the digest: K_m is
32 bytes). Every call is made from the key server's one token thread
(../shared/pkcs11-notes.md)."""

from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.enterprise.keys import C_CV, check_value_of
from runtime.pkcs11_token import open_session

if TYPE_CHECKING:
    import pkcs11

LABEL_PREFIX = "telekey-keyserver-km-"


def km_label(kmvno: int) -> str:
    return f"{LABEL_PREFIX}{kmvno}"


class KmToken:
    """The token holding K_m; the session opens on first use and stays open until `close`."""

    def __init__(self, module: Path, token_label: str, pin_file: Path) -> None:
        self.module = module
        self.token_label = token_label
        self.pin_file = pin_file
        self._session: pkcs11.Session | None = None

    def describe(self) -> str:
        return f"PKCS#11 token {self.token_label!r}"

    def _open(self) -> "pkcs11.Session":
        if self._session is None:
            self._session = open_session(self.module, self.token_label, self.pin_file, rw=True)
        return self._session

    def objects(self) -> "dict[int, pkcs11.SecretKey]":
        import pkcs11
        from pkcs11 import Attribute, ObjectClass

        found: dict[int, pkcs11.SecretKey] = {}
        # list(): a partly consumed object iterator blocks the session.
        for obj in list(self._open().get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY,
                                                  Attribute.TOKEN: True})):
            label = obj[Attribute.LABEL]
            suffix = label.removeprefix(LABEL_PREFIX)
            if label.startswith(LABEL_PREFIX) and suffix.isdigit() and isinstance(
                    obj, pkcs11.SecretKey):
                found[int(suffix)] = obj
        return found

    def find(self, kmvno: int) -> "pkcs11.SecretKey | None":
        return self.objects().get(kmvno)

    def import_key(self, kmvno: int, master_key: bytes) -> "pkcs11.SecretKey":
        """K_m as a new token object (replacing one left with the same label by a crash)."""
        import pkcs11
        from pkcs11 import Attribute, KeyType, ObjectClass

        stale = self.find(kmvno)
        if stale is not None:
            stale.destroy()
        obj = self._open().create_object({
            Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
            Attribute.VALUE: master_key, Attribute.LABEL: km_label(kmvno),
            Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False, Attribute.SIGN: True, Attribute.VERIFY: False,
            Attribute.ENCRYPT: False, Attribute.DECRYPT: False, Attribute.WRAP: False,
            Attribute.UNWRAP: False, Attribute.DERIVE: False})
        assert isinstance(obj, pkcs11.SecretKey)
        return obj

    @staticmethod
    def hmac_sha256(obj: "pkcs11.SecretKey", data: bytes) -> bytes:
        import pkcs11
        from pkcs11 import Mechanism

        assert isinstance(obj, pkcs11.SignMixin)  # made with SIGN
        return bytes(obj.sign(data, mechanism=Mechanism.SHA256_HMAC))

    def check_value(self, obj: "pkcs11.SecretKey") -> bytes:
        return check_value_of(self.hmac_sha256(obj, C_CV))

    def destroy_except(self, keep: int | None) -> list[int]:
        """Destroy every K_m object but version `keep` (retired ones, or one a crash left
        between import and commit); the versions destroyed."""
        gone = []
        for kmvno, obj in self.objects().items():
            if kmvno != keep:
                obj.destroy()
                gone.append(kmvno)
        return sorted(gone)

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


def object_attributes(obj: "pkcs11.SecretKey") -> dict[str, Any]:
    """The protection attributes of a K_m object (for `status`)."""
    from pkcs11 import Attribute

    return {name: bool(obj[attr]) for name, attr in (
        ("sensitive", Attribute.SENSITIVE), ("extractable", Attribute.EXTRACTABLE),
        ("never_extractable", Attribute.NEVER_EXTRACTABLE))}
