"""telekey's protocol library: codecs, crypto and protocol cores. No I/O, no asyncio, no settings.

One subpackage per protocol area:
- `messages/`: Kerberos, PKINIT and CMS wire formats (RFC 4120, 4556, 5652), one module per
  message family, on a strict DER codec;
- `crypto/`: Kerberos encryption types (RFC 3961, 3962, 8009), the PKINIT KDFs (RFC 8636), DH,
  CMS signatures and key transport;
- `kerberos/`: the AS, TGS and AP exchanges, tickets, caches, and the client cores;
- `pki/`: certificates, chains, device policy, self-issued certificates (seeds 001, 004);
- `pktc/`: PacketCable key management and ESP (seed 000);
- `calls/`: call control, call keys, SIP, SDP, RTP and escrow (seed 001).
`errors`, `codes` and `log` are used by every area.
"""
