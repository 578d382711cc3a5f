"""Build an AP-REQ with MIT's own library: `krb5_mk_req` (libkrb5, ctypes) from the ticket in
an MIT credential cache, its authenticator checksum over `in_data` (key usage 10, the session
key's checksum type). Run as a process with KRB5_CONFIG set:

    python tests/interop/mit_mk_req.py SERVICE HOSTNAME IN_DATA_HEX FILE:ccache

prints the AP-REQ as hex."""

import ctypes
import ctypes.util
import sys


class KrbData(ctypes.Structure):
    _fields_ = [("magic", ctypes.c_int32), ("length", ctypes.c_uint),
                ("data", ctypes.POINTER(ctypes.c_char))]


def main() -> None:
    service, hostname, in_hex, ccache_name = sys.argv[1:5]
    krb5 = ctypes.CDLL(ctypes.util.find_library("krb5") or "libkrb5.so.3")
    ctx, ccache, auth_context = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
    if krb5.krb5_init_context(ctypes.byref(ctx)):
        raise SystemExit("krb5_init_context failed")
    if krb5.krb5_cc_resolve(ctx, ccache_name.encode(), ctypes.byref(ccache)):
        raise SystemExit("krb5_cc_resolve failed")
    payload = bytes.fromhex(in_hex)
    in_data = KrbData(0, len(payload), ctypes.cast(ctypes.c_char_p(payload),
                                                   ctypes.POINTER(ctypes.c_char)))
    out = KrbData()
    code = krb5.krb5_mk_req(ctx, ctypes.byref(auth_context), 0x20000000,  # mutual-required
                            service.encode(), hostname.encode(), ctypes.byref(in_data), ccache,
                            ctypes.byref(out))
    if code:
        krb5.krb5_get_error_message.restype = ctypes.c_char_p
        raise SystemExit(f"krb5_mk_req: {krb5.krb5_get_error_message(ctx, code).decode()}")
    print(ctypes.string_at(out.data, out.length).hex())


if __name__ == "__main__":
    main()
