"""Kerberos crypto (RFC 3961/3962/8009, RFC 6113 §5.1, RFC 4556 §3.2.3.1, RFC 8636) on pyca/cryptography."""

from common.crypto.keys import Key, cf2, get_enctype, supported_enctypes

__all__ = ["Key", "cf2", "get_enctype", "supported_enctypes"]
