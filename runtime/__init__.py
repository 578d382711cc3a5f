"""The I/O the daemons share, below them and above `common/`.

`process`: running an asyncio daemon (uvloop when installed) and settling its heap after
start-up; `settings_file`: TOML settings files for the pydantic settings classes; `prometheus`:
metric helpers; `key_files`: private-key files written 0600; `kdc_client`: a Kerberos
exchange with a KDC over TCP and the credential made from its reply; `controller_link`: a
device's or controller's key-management link and ESP channel to a signaling controller.

It imports `common/` and never a daemon package or `telekey`.
"""
