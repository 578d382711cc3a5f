"""pyasn1 schemas named exactly as in the RFC ASN.1 modules ('-' becomes '_'), so they can be
grepped against the RFC text. Only common.messages imports these."""
