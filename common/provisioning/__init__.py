"""The provisioning CA's decisions, with no I/O (seed 001, FIG. 5A/5B and 7-11).

`records` validates what staff enter (MAC address, phone number, name, address, service
options, number ranges) and names the states of customers, devices, number holds and changes;
`lifecycle` turns a customer's service before and after a change (new device FIG. 7,
de-provisioning FIG. 8, service change FIG. 9, segment move FIG. 10, repair and loaner device
swap FIG. 11) into what must happen: head-end access-list changes, KDC customer records,
certificates issued and revoked, and the customer's state while and after it happens;
`headend` is the per-MAC access-list change the provisioning CA (and later the signaling
controller) sends a head-end, and how the head-end applies and acknowledges it.

The signaling controller's side is `lines` (the lines it pulls from the provisioning CA, whom
it admits, the devices it reports, the certificates it delivers); the device's side is
`device_states` (the FIG. 5A/5B state machines) and `delivery` (the certificate delivery the
controller sends it over ESP, and the checks it makes before acting on it).
"""
