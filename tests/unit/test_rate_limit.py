from common.kerberos.rate_limit import RateLimiter


def test_burst_then_rate_per_source():
    limiter = RateLimiter(rate=2, burst=3)
    assert [limiter.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b", 0.0)  # another source is not affected
    assert not limiter.allow("a", 0.2)  # 0.4 tokens refilled
    assert limiter.allow("a", 0.5)  # 1.0 token
    assert [limiter.allow("a", 10.0) for _ in range(4)] == [True, True, True, False]


def test_table_is_bounded():
    limiter = RateLimiter(rate=1, burst=1, max_sources=10)
    for i in range(25):
        limiter.allow(str(i), 0.0)
    assert len(limiter._buckets) <= 10
