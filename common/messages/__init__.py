"""Kerberos, PKINIT and CMS wire formats: strict DER <-> frozen dataclasses (see base.py)."""
