"""X.509 for PKINIT and the device lifecycle, with no I/O (RFC 5280, RFC 4556 §3.2.4; seeds 001
and 004).

`certs` builds the certificates a realm needs (CAs, the KDC's PKINIT certificate, device
certificates with their MAC address and phone ID); `chain` verifies a chain to an anchor with
PKINIT's EKU and SAN checks; `device_policy` decides which principal a client certificate speaks
for and on what terms (the unprovisioned restriction, CRLs, the customer record); `selfcert` is
the signed request and the self-issued certificate of seed 004.
"""
