"""Kerberos V5 (RFC 4120) and PKINIT (RFC 4556) protocol cores, with no I/O.

The KDC side: the AS exchange with PKINIT (`as_exchange`, RFC 4556 §3.2, RFC 8636), the TGS
exchange (`tgs_exchange`, RFC 4120 §3.3), issuing tickets and KDC replies (`tickets`), the AP
exchange for a service (`ap_exchange`, RFC 4120 §3.2), and what a KDC keeps between requests:
the replay cache and lookaside cache (RFC 4120 §3.2.3), opened tickets, per-source rate limits,
and TCP record marking (`tcp_framing`, RFC 4120 §7.2.2).

The client side: PKINIT (`pkinit_client`), TGS (`tgs_client`), encrypted-timestamp login from a
keytab (`keytab_login`), when to renew (`renewal`, RFC 4682 defaults), and MIT's keytab and
credential-cache file formats as bytes (`keytab`, `ccache`).
"""
