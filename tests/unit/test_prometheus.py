"""runtime.prometheus: `child`, the labelled child of a metric, looked up once, counting into
the same series as labels() does; `Counts` and `Durations`, plain numbers read back through
Prometheus's own text format and parser, as a scrape sees them."""

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from runtime.prometheus import Counts, Durations, child


def test_child_is_the_labelled_series():
    registry = CollectorRegistry()
    requests = Counter("t_requests", "requests", ["kind", "code"], registry=registry)
    first = child(requests, "as_req", "25")
    assert child(requests, "as_req", "25") is first is requests.labels("as_req", "25")
    first.inc()
    child(requests, "as_req", "25").inc()
    child(requests, "tgs_req", "0").inc()
    text = generate_latest(registry).decode()
    assert 't_requests_total{code="25",kind="as_req"} 2.0' in text
    assert 't_requests_total{code="0",kind="tgs_req"} 1.0' in text


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_counts_and_durations_as_scraped():
    registry = CollectorRegistry()
    requests = Counts("t_requests", "requests", ["kind", "code"], registry)
    processing = Durations("t_seconds", "time", ["kind"], (0.001, 0.01), registry)
    for code in ("0", "25", "25"):
        requests.inc("as_req", code)
    for seconds in (0.0005, 0.001, 0.002, 3.0):  # 0.001 falls in le=0.001 (upper bound included)
        processing.observe(seconds, "as_req")
    got = scrape(registry)
    assert got[("t_requests_total", (("code", "25"), ("kind", "as_req")))] == 2
    assert got[("t_requests_total", (("code", "0"), ("kind", "as_req")))] == 1
    buckets = {le: got[("t_seconds_bucket", (("kind", "as_req"), ("le", le)))]
               for le in ("0.001", "0.01", "+Inf")}
    assert buckets == {"0.001": 2, "0.01": 3, "+Inf": 4}
    assert got[("t_seconds_count", (("kind", "as_req"),))] == 4
    assert abs(got[("t_seconds_sum", (("kind", "as_req"),))] - 3.0035) < 1e-9
