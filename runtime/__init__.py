"""The I/O the daemons share, below them and above `common/`.

`process`: running an asyncio daemon (uvloop when installed) and settling its heap after
start-up; `settings_file`: TOML settings files for the pydantic settings classes; `prometheus`:
metric helpers; `key_files`: private keys, keytabs and stashes written 0600, PINs read;
`master_key_store`: a service's master key in a stash file or a PKCS#11 token, and the keyring
that reloads it on a new version; `pkcs11_token`: opening a token; `kdc_client`: a Kerberos
exchange with a KDC over TCP and the credential made from its reply; `controller_link`: a
device's or controller's key-management link and ESP channel to a signaling controller.

It imports `common/` and never a daemon package or `telekey`.
"""
