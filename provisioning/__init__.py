"""Provisioning CA, customer and billing records, device lifecycle."""
