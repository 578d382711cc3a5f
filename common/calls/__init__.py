"""Calls between devices (seed 001, FIG. 4; telekey profile v1), with no I/O.

`control` is the signaling controller's call control (a stateful proxy for set-up) and
`admission` whom a device may call (the unprovisioned restriction); `keys` makes per-call keys
and derives ESP and SRTP keys from them; `user_agent` is the device's side of a call; `sip` (RFC
3261 subset), `sdp` (RFC 4566, RFC 3264) and `rtp` (RFC 3550, G.711) are the wire formats;
`escrow` seals a call's media keys for lawful intercept (CALEA).
"""
