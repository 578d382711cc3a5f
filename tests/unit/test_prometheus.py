"""telekey.prometheus.child: the labelled child of a metric, looked up once, counting into the
same series as labels() does."""

from prometheus_client import CollectorRegistry, Counter, generate_latest

from telekey.prometheus import child


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
