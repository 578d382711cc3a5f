"""Kerberos KDC: PKINIT over TCP and UDP, tickets for signaling controllers."""
