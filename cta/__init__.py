"""Device agent: keys in a PKCS#11 token, PKINIT and AP clients, SRTP calls."""
