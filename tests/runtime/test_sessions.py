import pytest

from partition.runtime.errors import CapacityError, PositionError, UnknownSessionError
from partition.runtime.sessions import SessionTable


def test_sessions_get_distinct_slots_until_the_table_is_full():
    table = SessionTable(slots=2, max_context=16, idle_timeout_s=60)
    a, new_a = table.open("a")
    b, new_b = table.open("b")
    assert new_a and new_b and {a.slot, b.slot} == {0, 1}
    again, new = table.open("a")
    assert again is a and not new
    with pytest.raises(CapacityError, match="all 2 KV slots.*EndSession.*--kv-budget-mb"):
        table.open("c")
    table.end("a")
    c, _ = table.open("c")
    assert c.slot == a.slot


def test_steps_must_follow_in_order_and_fit_the_context():
    table = SessionTable(slots=1, max_context=8, idle_timeout_s=60)
    s, _ = table.open("s")
    table.check_step(s, 0, 5)
    table.advance(s, 5)
    with pytest.raises(PositionError, match="expected position 5, got 4"):
        table.check_step(s, 4, 1)
    with pytest.raises(PositionError, match="expected position 5, got 6"):
        table.check_step(s, 6, 1)
    with pytest.raises(PositionError, match="run past the 8 tokens"):
        table.check_step(s, 5, 4)
    table.check_step(s, 5, 3)


def test_idle_sessions_expire_and_free_their_slot():
    table = SessionTable(slots=1, max_context=8, idle_timeout_s=10)
    s, _ = table.open("s")
    assert table.expire(now=s.last_used + 5) == []
    assert [x.session_id for x in table.expire(now=s.last_used + 11)] == ["s"]
    with pytest.raises(UnknownSessionError, match="expired after 10 s idle"):
        table.get("s")
    table.open("t")  # the slot is free again
