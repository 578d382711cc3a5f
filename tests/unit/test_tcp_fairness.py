"""common.kerberos.tcp_fairness: per-address and per-network caps, and at the global cap the
busiest network's least recently active connection makes room for a newcomer."""

from hypothesis import given
from hypothesis import strategies as st

from common.kerberos.tcp_fairness import ConnectionTable, TcpLimits


def test_one_address_is_capped_and_others_still_get_in():
    table = ConnectionTable(TcpLimits(max_total=100, max_per_address=3, max_per_network=50))
    assert [table.admit(i, "192.0.2.1").accepted for i in range(4)] == [True] * 3 + [False]
    assert table.admit(4, "192.0.2.1").reason == "per_address"
    assert table.admit(5, "192.0.2.2").accepted


def test_one_network_is_capped():
    table = ConnectionTable(TcpLimits(max_total=100, max_per_address=10, max_per_network=4))
    assert all(table.admit(i, f"192.0.2.{i}").accepted for i in range(4))
    refused = table.admit(9, "192.0.2.200")
    assert not refused.accepted and refused.reason == "per_network"
    assert table.admit(10, "192.0.3.1").accepted  # the next /24
    assert table.admit(11, "2001:db8::1").accepted
    assert table.network_of("2001:db8::1") == table.network_of("2001:db8::ffff") == \
        "2001:db8::/64"
    assert table.network_of("::ffff:192.0.2.7") == "192.0.2.0/24"


def test_at_the_global_cap_the_busiest_networks_least_recent_connection_goes():
    table = ConnectionTable(TcpLimits(max_total=4, max_per_address=10, max_per_network=10))
    for name in ("a1", "a2", "a3"):
        assert table.admit(name, "198.51.100.1").accepted
    assert table.admit("b1", "203.0.113.1").accepted
    table.touch("a1")  # a2 is now the least recently active of the busiest network
    admission = table.admit("c1", "192.0.2.9")
    assert admission.accepted and admission.evict == "a2"
    assert len(table) == 4
    table.remove("a2")  # the caller's close reports back: nothing breaks
    assert len(table) == 4


def test_removal_frees_the_slots():
    table = ConnectionTable(TcpLimits(max_total=10, max_per_address=1, max_per_network=1))
    assert table.admit("x", "192.0.2.1").accepted
    table.remove("x")
    table.remove("x")
    assert table.admit("y", "192.0.2.1").accepted


@given(st.lists(st.tuples(st.sampled_from(["admit", "touch", "remove"]), st.integers(0, 30),
                          st.sampled_from(["192.0.2.1", "192.0.2.2", "198.51.100.1", "::1"])),
                max_size=200))
def test_caps_always_hold(operations):
    limits = TcpLimits(max_total=8, max_per_address=4, max_per_network=6)
    table = ConnectionTable(limits)
    open_ = {}
    for op, conn, address in operations:
        if op == "admit" and conn not in open_:
            admission = table.admit(conn, address)
            if admission.accepted:
                open_.pop(admission.evict, None)
                open_[conn] = address
        elif op == "touch":
            table.touch(conn)
        elif op == "remove":
            table.remove(conn)
            open_.pop(conn, None)
        assert len(table) == len(open_) <= limits.max_total
        for address_ in set(open_.values()):
            assert list(open_.values()).count(address_) <= limits.max_per_address
