"""MIT Kerberos's own codec and crypto, called in-process through ctypes, as the baseline that
bench/ scripts print beside telekey's figures (Debian libkrb5-3 / libk5crypto3)."""

import ctypes
import ctypes.util
from collections.abc import Callable


class KrbData(ctypes.Structure):
    _fields_ = [("magic", ctypes.c_int32), ("length", ctypes.c_uint),
                ("data", ctypes.c_void_p)]


class KeyBlock(ctypes.Structure):
    _fields_ = [("magic", ctypes.c_int32), ("enctype", ctypes.c_int32),
                ("length", ctypes.c_uint), ("contents", ctypes.c_void_p)]


class EncData(ctypes.Structure):
    _fields_ = [("magic", ctypes.c_int32), ("enctype", ctypes.c_int32),
                ("kvno", ctypes.c_uint), ("ciphertext", KrbData)]


def _load(name: str) -> ctypes.CDLL:
    path = ctypes.util.find_library(name) or f"lib{name}.so.3"
    return ctypes.CDLL(path)


class Mit:
    """Thin wrappers returning zero-argument callables, so the timing loop measures only MIT."""

    def __init__(self) -> None:
        self.krb5 = _load("krb5")
        self.k5crypto = _load("k5crypto")
        self.ctx = ctypes.c_void_p()
        if self.krb5.krb5_init_context(ctypes.byref(self.ctx)) != 0:
            raise RuntimeError("krb5_init_context failed")

    @staticmethod
    def _data(buf: bytes) -> tuple[KrbData, ctypes.Array[ctypes.c_char]]:
        raw = ctypes.create_string_buffer(buf, len(buf))
        return KrbData(0, len(buf), ctypes.cast(raw, ctypes.c_void_p)), raw

    def decoder(self, kind: str, der: bytes) -> Callable[[], None]:
        """decode_krb5_<kind> followed by the matching krb5_free_<...>."""
        decode = getattr(self.krb5, f"decode_krb5_{kind}")
        free = getattr(self.krb5, {"ap_req": "krb5_free_ap_req", "as_req": "krb5_free_kdc_req",
                                   "enc_tkt_part": "krb5_free_enc_tkt_part"}[kind])
        data, raw = self._data(der)
        out = ctypes.c_void_p()
        ctx = self.ctx

        def run() -> None:
            if decode(ctypes.byref(data), ctypes.byref(out)) != 0:
                raise RuntimeError(f"MIT decode_krb5_{kind} failed")
            free(ctx, out)

        run.keepalive = raw  # type: ignore[attr-defined]
        return run

    def encoder(self, kind: str, der: bytes) -> Callable[[], None] | None:
        """encode_krb5_<kind> of a structure MIT decoded once (None if not exported)."""
        try:
            encode = getattr(self.krb5, f"encode_krb5_{kind}")
        except AttributeError:
            return None
        data, raw = self._data(der)
        value = ctypes.c_void_p()
        if getattr(self.krb5, f"decode_krb5_{kind}")(ctypes.byref(data), ctypes.byref(value)):
            raise RuntimeError("MIT decode failed")
        out = ctypes.POINTER(KrbData)()
        free_data = self.krb5.krb5_free_data
        ctx = self.ctx

        def run() -> None:
            if encode(value, ctypes.byref(out)) != 0:
                raise RuntimeError(f"MIT encode_krb5_{kind} failed")
            free_data(ctx, out)

        run.keepalive = (raw, value)  # type: ignore[attr-defined]
        return run

    def cipher(self, enctype: int, key: bytes, usage: int,
               plaintext: bytes) -> tuple[Callable[[], None], Callable[[], None]]:
        """(encrypt, decrypt) closures over krb5_c_encrypt / krb5_c_decrypt."""
        key_raw = ctypes.create_string_buffer(key, len(key))
        keyblock = KeyBlock(0, enctype, len(key), ctypes.cast(key_raw, ctypes.c_void_p))
        plain, plain_raw = self._data(plaintext)
        length = ctypes.c_size_t()
        self.k5crypto.krb5_c_encrypt_length(self.ctx, enctype, len(plaintext),
                                            ctypes.byref(length))
        ct_raw = ctypes.create_string_buffer(length.value)
        enc = EncData(0, enctype, 0, KrbData(0, length.value, ctypes.cast(ct_raw,
                                                                         ctypes.c_void_p)))
        out_raw = ctypes.create_string_buffer(len(plaintext) + 64)
        out = KrbData(0, len(out_raw), ctypes.cast(out_raw, ctypes.c_void_p))
        encrypt, decrypt, ctx = self.k5crypto.krb5_c_encrypt, self.k5crypto.krb5_c_decrypt, self.ctx

        def do_encrypt() -> None:
            enc.ciphertext.length = length.value
            if encrypt(ctx, ctypes.byref(keyblock), usage, None, ctypes.byref(plain),
                       ctypes.byref(enc)) != 0:
                raise RuntimeError("krb5_c_encrypt failed")

        def do_decrypt() -> None:
            out.length = len(out_raw)
            if decrypt(ctx, ctypes.byref(keyblock), usage, None, ctypes.byref(enc),
                       ctypes.byref(out)) != 0:
                raise RuntimeError("krb5_c_decrypt failed")

        do_encrypt()
        do_decrypt.keepalive = (key_raw, plain_raw, ct_raw, out_raw)  # type: ignore[attr-defined]
        return do_encrypt, do_decrypt
