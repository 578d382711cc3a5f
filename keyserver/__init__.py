"""Enterprise key server: seed-derived device keys over HTTPS and mutual TLS."""
