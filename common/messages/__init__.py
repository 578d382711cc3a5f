"""Kerberos, PKINIT and CMS wire formats (RFC 4120 §5, RFC 4556 §3.2, RFC 5652, RFC 8636):
strict DER <-> frozen dataclasses, one module per message family (`kdc_req`, `kdc_rep`,
`ap_req`, `ap_rep`, `krb_error`, `pkinit`, `cms`, ...). `der` and `base` are the lean DER codec
and the dataclass mapping every family uses (see base.py); `asn1/` holds the pyasn1 schemas the
lean codec is checked against."""
