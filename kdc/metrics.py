"""Prometheus metrics of the KDC: requests by kind and result code, and processing time."""

from prometheus_client import CollectorRegistry

from runtime.prometheus import Counts, Durations

registry = CollectorRegistry()
requests = Counts("telekey_kdc_requests", "KDC requests by kind and KRB-ERROR code (0 = OK)",
                  ["kind", "code"], registry)
processing = Durations("telekey_kdc_processing_seconds", "Time to process one request",
                       ["kind"], (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5),
                       registry)
dropped = Counts("telekey_kdc_dropped", "Datagrams dropped unanswered (too garbled to answer)",
                 ["transport", "reason"], registry)
connections_refused = Counts("telekey_kdc_tcp_refused", "TCP connections refused or closed to "
                             "make room, by reason (per_address, per_network, evicted)",
                             ["reason"], registry)
rate_limited = Counts("telekey_kdc_rate_limited", "AS requests refused by the per-source limit",
                      ["transport"], registry)
