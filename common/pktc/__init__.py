"""PacketCable key management and secure signaling (seed 000; PKT-SP-SEC framing as Wireshark's
`pktc` dissector reads it), with no I/O.

`km_framing` encodes and decodes the key-management messages on UDP 1293 (Wake Up, AP Request,
AP Reply, Security Parameter Recovered, Rekey, Error Reply) with their trailing HMAC;
`km_server` is the signaling controller's side (stateless AP-REQ/AP-REP, SA set-up, ESP
demultiplexing), `km_client` the device's; `esp` is ESP (RFC 4303, transport mode) inside UDP
encapsulation (RFC 3948) with the SA key derivation and anti-replay window.
"""
