"""Kerberos crypto on pyca/cryptography: RFC 3961/3962/8009, RFC 6113 §5.1, PKINIT KDFs; and
keys at rest under a master key (`master_key`, RFC 5649)."""

from common.crypto.keys import Key, cf2, get_enctype, supported_enctypes

__all__ = ["Key", "cf2", "get_enctype", "supported_enctypes"]
