"""Chained call keys (seed 003: the key broker), telekey profile v1, with no I/O.

The signaling controller is the broker. Each device shares a small pool of one-time keys
with it, derived from the device's AP exchange; a call's session key is one of the callee's,
handed to the caller wrapped under one of the caller's ({K_callee}K_caller), and every key a
session used is replaced afterwards under cover of the old one ({K_next}K_callee), inside the
device's own ESP SA. `keys` holds the derivations and RFC 5649 wrapping with their contexts,
`headers` the SIP header values that carry them, `device` the device's side of the pool.
"""
