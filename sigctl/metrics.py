"""Prometheus metrics of the signaling controller."""

from prometheus_client import CollectorRegistry, Counter, Gauge

registry = CollectorRegistry()
exchanges = Counter("telekey_sigctl_exchanges", "Key-management messages by kind and result",
                    ["kind", "result"], registry=registry)
esp_packets = Counter("telekey_sigctl_esp_packets", "ESP packets received, by outcome "
                      "(accepted, ESP_BAD_ICV, ESP_REPLAY, UNKNOWN_SPI, malformed ...)",
                      ["result"], registry=registry)
wake_ups = Counter("telekey_sigctl_wake_ups", "Wake Up messages sent", registry=registry)
wake_ups_suppressed = Counter("telekey_sigctl_wake_ups_suppressed", "Wake Ups not sent for "
                              "ESP with an unknown SPI, by reason (short: the packet was "
                              "smaller than the Wake Up; per_source; global)", ["reason"],
                              registry=registry)
security_associations = Gauge("telekey_sigctl_security_associations", "Live SAs",
                              registry=registry)
calls = Counter("telekey_sigctl_call_events", "Call-control events (call_invite, "
                "call_refused, call_answered, call_key_ack_mismatch, call_ended, ...)",
                ["event"], registry=registry)
ras_messages = Counter("telekey_sigctl_ras_messages", "H.225.0 RAS messages (seed 002 "
                       "registration) by kind and result (OK, GRJ_STALE_KEY, GRJ_NOT_HOMED, "
                       "BAD_ICV, REPLAY, NO_CHALLENGE, MISSING_TOKEN, LOCKED_OUT, BAD_PER ...)",
                       ["kind", "result"], registry=registry)
ras_lockouts = Counter("telekey_sigctl_ras_lockouts", "Source addresses locked out after "
                       "`ras_lockout_failures` refused registrations", registry=registry)
