"""The rules both limits backends share (``_base``), the Redis scripts' mirrors included.

`kept_free` (the room a background caller leaves to others) and `small_consumer` (the slots a
409 shows a web app holding) are written once in Python; `ActiveTaskLimiter` applies them in
process (see ``test_make_way``), `RedisActiveTaskLimiter` across processes (see
``test_redis_limits``).
"""

from __future__ import annotations

from nanobanana_async.limits._base import COURTESY_SHARE, kept_free, small_consumer


def test_no_room_is_kept_unless_asked_or_courteous() -> None:
    assert kept_free(0, courtesy=0, neighbours=0, limit=10, known=True) == 0
    assert kept_free(2, courtesy=0, neighbours=0, limit=10, known=True) == 2
    assert kept_free(0, courtesy=1, neighbours=0, limit=10, known=True) == 1
    assert kept_free(2, courtesy=3, neighbours=0, limit=10, known=True) == 3


def test_slots_already_left_to_others_count_toward_the_room() -> None:
    assert kept_free(3, courtesy=0, neighbours=2, limit=10, known=True) == 1
    assert kept_free(0, courtesy=1, neighbours=1, limit=10, known=True) == 0


def test_background_work_may_always_hold_one_slot() -> None:
    assert kept_free(5, courtesy=0, neighbours=0, limit=3, known=True) == 2
    assert kept_free(5, courtesy=2, neighbours=0, limit=1, known=True) == 0


def test_no_room_is_kept_while_the_cap_is_learned() -> None:
    assert kept_free(2, courtesy=1, neighbours=0, limit=10, known=False) == 0


def test_a_409_shows_a_small_consumer_by_what_our_slots_cannot_explain() -> None:
    assert small_consumer(None, None, 3, 10) == 0  # a bare 409: nothing told
    assert small_consumer(10, None, 10, 10) == 0  # the cap named, and we hold all of it
    assert small_consumer(10, None, 8, 10) == 2  # the rest of the cap is someone's
    assert small_consumer(None, 9, 10, 10) == 0  # 9 active of our 10 (one is the refused one)
    assert small_consumer(None, 11, 10, 10) == 2
    assert small_consumer(20, 21, 19, 20) == 3  # whichever shows more


def test_a_large_consumer_is_not_one_to_leave_room_for() -> None:
    share = int(COURTESY_SHARE * 20)
    assert small_consumer(20, None, 20 - share, 20) == share
    assert small_consumer(20, None, 20 - share - 1, 20) == 0  # another batch, say
    assert small_consumer(3, None, 2, 3) == 1  # one slot is always small
    assert small_consumer(None, 12, 10, 10) == 0  # 3 of a cap of 10 (the one in use)


def test_a_cap_that_is_another_tiers_names_a_move_only_for_a_key_that_follows_the_table() -> None:
    from nanobanana_async.limits._base import tier_named_by_cap

    assert tier_named_by_cap("basic", 5, 15) == "standard"  # an upgrade
    assert tier_named_by_cap("standard", 15, 5) == "basic"  # a downgrade
    assert tier_named_by_cap("basic", 5, 5) is None  # nothing moved
    assert tier_named_by_cap("basic", 5, 12) is None  # no tier's cap: says nothing of rates
    assert tier_named_by_cap("standard", 10, 15) is None  # the key did not follow its row
    assert tier_named_by_cap(None, 5, 15) is None  # the tier was never named
    assert tier_named_by_cap("basic", None, 15) is None  # no cap was named before


def test_the_cap_binds_only_where_the_create_rate_could_fill_more_slots() -> None:
    from nanobanana_async.limits._base import cap_binds

    assert cap_binds(3.0, 4.0, 5)  # basic, tasks of 4 s: 12 slots' worth of creates
    assert not cap_binds(20.0, 1.0, 30)  # pro, tasks of 1 s: the create rate binds
    assert cap_binds(None, 1.0, 30)  # no create limit known: it may
