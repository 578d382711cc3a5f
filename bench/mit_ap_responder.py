"""A minimal UDP AP responder on MIT's libkrb5 (ctypes), for bench/ap_exchange.py: each
datagram is a bare AP-REQ; `krb5_rd_req` verifies it with the keytab (MIT's replay cache on),
`krb5_mk_rep` answers with an acceptor sub-key (KRB5_AUTH_CONTEXT_USE_SUBKEY). Prints
`listening <port>` and serves until killed. Run with KRB5_CONFIG and KRB5RCACHEDIR set.

    python bench/mit_ap_responder.py KEYTAB
"""

import ctypes
import ctypes.util
import socket
import sys

USE_SUBKEY = 0x00000020


class KrbData(ctypes.Structure):
    _fields_ = [("magic", ctypes.c_int32), ("length", ctypes.c_uint),
                ("data", ctypes.POINTER(ctypes.c_char))]


def main() -> None:
    krb5 = ctypes.CDLL(ctypes.util.find_library("krb5") or "libkrb5.so.3")
    ctx, keytab = ctypes.c_void_p(), ctypes.c_void_p()
    krb5.krb5_init_context(ctypes.byref(ctx))
    if krb5.krb5_kt_resolve(ctx, f"FILE:{sys.argv[1]}".encode(), ctypes.byref(keytab)):
        raise SystemExit("krb5_kt_resolve failed")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    print("listening", sock.getsockname()[1], flush=True)
    rd_req, mk_rep = krb5.krb5_rd_req, krb5.krb5_mk_rep
    auth_con_init, auth_con_free = krb5.krb5_auth_con_init, krb5.krb5_auth_con_free
    setflags, free_data_contents = krb5.krb5_auth_con_setflags, krb5.krb5_free_data_contents
    options = ctypes.c_int32()
    while True:
        data, peer = sock.recvfrom(65536)
        auth = ctypes.c_void_p()
        auth_con_init(ctx, ctypes.byref(auth))
        setflags(ctx, auth, USE_SUBKEY)
        buffer = ctypes.create_string_buffer(data, len(data))
        inbuf = KrbData(0, len(data), ctypes.cast(buffer, ctypes.POINTER(ctypes.c_char)))
        out = KrbData()
        if rd_req(ctx, ctypes.byref(auth), ctypes.byref(inbuf), None, keytab,
                  ctypes.byref(options), None) == 0 and \
                mk_rep(ctx, auth, ctypes.byref(out)) == 0:
            sock.sendto(ctypes.string_at(out.data, out.length), peer)
            free_data_contents(ctx, ctypes.byref(out))
        else:
            sock.sendto(b"\x00", peer)
        auth_con_free(ctx, auth)


if __name__ == "__main__":
    main()
