"""The fake provider's state machine, driven by hand through `FakeNanoBanana.handle`."""

from __future__ import annotations

import json
import math
import tracemalloc
from typing import Any

import attrs
import pytest

from nanobanana_async.testing import TIERS, FakeNanoBanana, FakeTask, Faults, TierLimits

T2I = "nano-banana-text-to-image"
I2I = "nano-banana-image-to-image"
# The keys of `data` in the provider's recordInfo example (seeds/*.txt), in order.
SEED_RECORD_KEYS = [
    "taskId",
    "model",
    "state",
    "param",
    "resultJson",
    "failCode",
    "failMsg",
    "costTime",
    "completeTime",
    "createTime",
]


@pytest.fixture
def fake(make_fake):
    return make_fake()


@pytest.fixture
def api(fake, api_for):
    return api_for(fake)


# -- tiers ------------------------------------------------------------------------------------


def test_tier_table_matches_the_spec() -> None:
    table = {
        name: (
            t.create_per_second,
            t.create_per_minute,
            t.query_per_second,
            t.query_per_minute,
            t.max_active,
        )
        for name, t in TIERS.items()
    }
    assert table == {
        "free": (1, 10, 2, 60, 1),
        "basic": (5, 180, 20, 1000, 5),
        "standard": (10, 600, 50, 3000, 15),
        "pro": (20, 1200, 100, 6000, 30),
        "ultra": (50, 3000, 200, 12000, 80),
        "enterprise": (100, 6000, 500, 30000, 300),
    }
    assert all(t.name == name for name, t in TIERS.items())


def test_default_tier_is_basic_and_explicit_values_override_it() -> None:
    assert FakeNanoBanana().limits == TIERS["basic"]
    fake = FakeNanoBanana(tier="pro", max_active=2, query_per_minute=7)
    assert fake.limits == TierLimits(
        name="pro",
        create_per_second=20,
        create_per_minute=1200,
        query_per_second=100,
        query_per_minute=7,
        max_active=2,
    )
    assert fake.tier == "pro"
    unlimited = FakeNanoBanana(tier=None)
    assert unlimited.limits == TierLimits(name="custom")
    assert unlimited.tier == "custom"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tier": "gold"}, "unknown tier"),
        ({"time_scale": 0}, "time_scale"),
        ({"fail_codes": ()}, "fail_codes"),
        ({"credits": -1}, "credits"),
        ({"max_active": 0}, "max_active"),
        ({"create_per_second": 0}, "create_per_second"),
        ({"duration": -1.0}, "duration"),
        ({"duration": (5.0, 1.0)}, "duration"),
        ({"duration": (-1.0, 1.0)}, "duration"),
        ({"fail_rate": 1.5}, "fail_rate"),
    ],
)
def test_impossible_settings_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FakeNanoBanana(**kwargs)


# -- auth -------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "sk-wrong", ""])
def test_create_without_the_right_key_is_401(api, fake, key: str | None) -> None:
    status, body = api.create(key=key)
    assert status == 401
    assert body["code"] == 401
    assert body["data"] is None
    assert "API key" in body["msg"]
    assert fake.stats.unauthorized == 1
    assert fake.stats.tasks_created == 0


def test_query_without_the_right_key_is_401(api, fake) -> None:
    task_id = api.task_id()
    assert api.query(task_id, key="nope")[0] == 401
    assert api.query(task_id, key=None)[0] == 401


def test_bearer_scheme_is_case_insensitive_but_the_key_is_not(fake) -> None:
    def create(authorization: str) -> int:
        body = json.dumps({"model": T2I, "input": {"prompt": "x"}}).encode()
        return fake.handle(
            method="POST",
            path="/api/v1/jobs/createTask",
            authorization=authorization,
            body=body,
        ).status

    assert create("bearer sk-test") == 200
    assert create("Basic sk-test") == 401
    assert create("Bearer SK-TEST") == 401
    assert create("Bearer") == 401


# -- rate limits ------------------------------------------------------------------------------


def test_one_second_window_refuses_with_the_documented_429(make_fake, api_for, clock) -> None:
    fake = make_fake(tier="free", duration=0.0)
    api = api_for(fake)
    clock.advance(0.25)
    assert api.create()[0] == 200
    reply = api.create_reply()
    assert reply.status == 429
    body = json.loads(reply.body)
    assert body == {
        "code": 429,
        "msg": "Rate limit exceeded",
        "data": {"retryAfter": 0.75, "limit": 1, "tier": "free", "windowSeconds": 1},
    }
    assert dict(reply.headers)["retry-after"] == "1"
    clock.advance(0.74)
    assert api.create()[0] == 429
    clock.advance(0.01)  # t = 1.0: a new window
    assert api.create()[0] == 200
    stats = fake.stats
    assert (stats.rate_limited, stats.rate_limited_create, stats.rate_limited_query) == (2, 2, 0)
    assert stats.tasks_created == 2
    assert stats.create_requests == 4


def test_refused_requests_do_not_use_up_the_window(make_fake, api_for, clock) -> None:
    fake = make_fake(create_per_second=2, duration=0.0)
    api = api_for(fake)
    assert [api.create()[0] for _ in range(10)] == [200, 200] + [429] * 8
    clock.advance(1.0)
    assert [api.create()[0] for _ in range(3)] == [200, 200, 429]


def test_sixty_second_window(make_fake, api_for, clock) -> None:
    fake = make_fake(create_per_minute=3, duration=0.0)
    api = api_for(fake)
    for _ in range(3):
        assert api.create()[0] == 200
        clock.advance(10.0)
    status, body = api.create()  # t = 30
    assert status == 429
    assert body["data"] == {
        "retryAfter": 30.0,
        "limit": 3,
        "tier": "custom",
        "windowSeconds": 60,
    }
    clock.advance(29.9)
    assert api.create()[0] == 429
    clock.advance(0.1)  # t = 60
    assert api.create()[0] == 200


def test_when_both_windows_are_full_the_longer_wait_is_reported(make_fake, api_for, clock) -> None:
    fake = make_fake(create_per_second=1, create_per_minute=1, duration=0.0)
    api = api_for(fake)
    assert api.create()[0] == 200
    status, body = api.create()
    assert status == 429
    assert body["data"]["windowSeconds"] == 60
    assert body["data"]["retryAfter"] == 60.0
    clock.advance(1.0)
    assert api.create()[1]["data"]["retryAfter"] == 59.0


def test_windows_are_fixed_and_aligned_to_the_start(make_fake, api_for, clock) -> None:
    fake = make_fake(create_per_second=1, duration=0.0)
    api = api_for(fake)
    clock.advance(0.999)
    assert api.create()[0] == 200
    clock.advance(0.001)
    assert api.create()[0] == 200  # a burst across the boundary is allowed: fixed windows


def test_create_and_query_are_counted_separately(make_fake, api_for) -> None:
    fake = make_fake(tier="free")
    api = api_for(fake)
    task_id = api.task_id()
    assert api.create()[0] == 429
    assert [api.query(task_id)[0] for _ in range(3)] == [200, 200, 429]
    status, body = api.query(task_id)
    assert status == 429
    assert body["data"]["limit"] == 2
    assert body["data"]["tier"] == "free"
    stats = fake.stats
    assert (stats.rate_limited, stats.rate_limited_create, stats.rate_limited_query) == (3, 1, 2)


def test_query_minute_window(make_fake, api_for, clock) -> None:
    fake = make_fake(query_per_minute=2)
    api = api_for(fake)
    task_id = api.task_id()
    assert [api.query(task_id)[0] for _ in range(3)] == [200, 200, 429]
    clock.advance(60)
    assert api.query(task_id)[0] == 200


def test_unauthorized_requests_do_not_count_against_the_limits(make_fake, api_for) -> None:
    fake = make_fake(tier="free")
    api = api_for(fake)
    assert api.create(key="wrong")[0] == 401
    assert api.create()[0] == 200


def test_time_scale_shrinks_windows_and_reports_real_seconds(make_fake, api_for, clock) -> None:
    fake = make_fake(tier="free", time_scale=0.01, duration=0.0)
    api = api_for(fake)
    assert api.create()[0] == 200
    clock.advance(0.004)
    reply = api.create_reply()
    data = json.loads(reply.body)["data"]
    assert reply.status == 429
    assert data["windowSeconds"] == pytest.approx(0.01)
    assert data["retryAfter"] == pytest.approx(0.006)
    assert dict(reply.headers)["retry-after"] == "1"  # HTTP wants whole seconds
    clock.advance(0.006)
    assert api.create()[0] == 200


def test_retry_after_is_rounded_up_to_the_millisecond(make_fake, api_for, clock) -> None:
    fake = make_fake(create_per_second=1, duration=0.0)
    api = api_for(fake)
    clock.advance(0.1234)
    api.create()
    retry_after = api.create()[1]["data"]["retryAfter"]
    assert retry_after == 0.877
    assert math.isclose(retry_after * 1000, round(retry_after * 1000))


# -- active tasks -----------------------------------------------------------------------------


def test_active_task_limit_is_409_until_a_task_ends(make_fake, api_for, clock) -> None:
    fake = make_fake(max_active=2, duration=10.0)
    api = api_for(fake)
    api.task_id("one")
    clock.advance(1.0)
    api.task_id("two")
    status, body = api.create("three")
    assert status == 409
    assert body == {
        "code": 409,
        "msg": "Active task limit exceeded",
        "data": {"limit": 2, "active": 2},
    }
    clock.advance(8.999)
    assert api.create("three")[0] == 409
    clock.advance(0.001)  # the first task ends at t = 10, whether or not anyone polled it
    assert api.create("three")[0] == 200
    stats = fake.stats
    assert stats.active_limited == 2
    assert stats.max_active == 2
    assert stats.active == 2
    clock.advance(100.0)
    assert fake.stats.active == 0


def test_the_tiers_active_limit_applies(make_fake, api_for) -> None:
    api = api_for(make_fake(tier="free"))
    api.task_id()
    status, _ = api.create()
    assert status == 429  # the 1-second window comes first
    api = api_for(make_fake(tier="free", create_per_second=10))
    api.task_id()
    assert api.create()[1]["data"] == {"limit": 1, "active": 1}


def test_max_active_is_the_peak(make_fake, api_for, clock) -> None:
    fake = make_fake(duration=5.0)
    api = api_for(fake)
    for _ in range(3):
        api.task_id()
    clock.advance(6.0)
    api.task_id()
    assert fake.stats.max_active == 3
    assert fake.stats.active == 1


# -- idempotency and duplicates ---------------------------------------------------------------


def test_same_request_id_returns_the_same_task_and_charges_nothing(make_fake, api_for) -> None:
    fake = make_fake(credits=1, max_active=1)
    api = api_for(fake)
    first = api.task_id(request_id="req-1")
    assert fake.credits == 0
    status, body = api.create(request_id="req-1")  # no credits, no free slot: still 200
    assert status == 200
    assert body == {"code": 200, "msg": "success", "data": {"taskId": first}}
    stats = fake.stats
    assert stats.tasks_created == 1
    assert stats.idempotent_replays == 1
    assert stats.duplicates == 0
    assert stats.max_active == 1
    assert fake.tasks[first].request_id == "req-1"


def test_replay_ignores_key_order(fake, api) -> None:
    one = json.dumps({"model": T2I, "input": {"prompt": "p", "image_size": "1:1"}}).encode()
    two = json.dumps({"input": {"image_size": "1:1", "prompt": "p"}, "model": T2I}).encode()
    task_id = api.task_id(body=one, request_id="r")
    assert api.create(body=two, request_id="r")[1]["data"]["taskId"] == task_id
    assert fake.stats.conflicts == 0


def test_request_id_reused_for_another_body_is_a_conflict(fake, api) -> None:
    task_id = api.task_id("first", request_id="r")
    status, body = api.create("second", request_id="r")
    assert status == 409
    assert body["data"] == {"taskId": task_id}
    assert "X-Request-ID" in body["msg"]
    assert fake.stats.conflicts == 1
    assert fake.stats.active_limited == 0
    assert api.create(body=b"[]", request_id="r")[0] == 409


def test_duplicates_are_counted_without_a_shared_request_id(fake, api) -> None:
    api.task_id("same")
    api.task_id("same")
    api.task_id("same", request_id="a")
    api.task_id("same", request_id="b")
    api.task_id("other", request_id="c")
    api.task_id("same", request_id="a")  # a replay, not a duplicate
    stats = fake.stats
    assert stats.tasks_created == 5
    assert stats.duplicates == 3
    assert stats.idempotent_replays == 1


def test_a_refused_create_does_not_reserve_its_request_id(fake, api) -> None:
    assert api.create("", request_id="r")[0] == 422
    task_id = api.task_id("fine", request_id="r")
    assert fake.tasks[task_id].prompt == "fine"


def test_blank_request_id_is_no_request_id(fake, api) -> None:
    api.task_id("x", request_id="   ")
    api.task_id("x", request_id="")
    assert fake.stats.duplicates == 1
    assert all(task.request_id is None for task in fake.tasks.values())
    api.task_id("y", request_id="  padded  ")
    assert fake.tasks[list(fake.tasks)[-1]].request_id == "padded"


# -- credits ----------------------------------------------------------------------------------


def test_credits_run_out_with_402(make_fake, api_for) -> None:
    fake = make_fake(credits=2)
    api = api_for(fake)
    api.task_id()
    api.task_id()
    status, body = api.create()
    assert status == 402
    assert body == {"code": 402, "msg": "Insufficient credits", "data": None}
    assert fake.stats.insufficient_credits == 1
    assert fake.credits == 0
    fake.credits = 1
    api.task_id()
    assert fake.credits == 0
    fake.credits = None
    api.task_id()
    assert fake.credits is None
    assert fake.stats.tasks_created == 4


# -- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        (b"{not json", 400, "JSON"),
        (b"[1, 2]", 400, "JSON object"),
        ({"input": {"prompt": "p"}}, 400, "model"),
        ({"model": "nano-banana-pro", "input": {"prompt": "p"}}, 400, "model"),
        ({"model": T2I}, 400, "input"),
        ({"model": T2I, "input": "prompt"}, 400, "input"),
        ({"model": T2I, "input": {}}, 422, "input.prompt"),
        ({"model": T2I, "input": {"prompt": 3}}, 422, "input.prompt"),
        ({"model": T2I, "input": {"prompt": "  "}}, 422, "input.prompt"),
        ({"model": T2I, "input": {"prompt": "x" * 20001}}, 422, "input.prompt"),
        ({"model": I2I, "input": {"prompt": "p"}}, 422, "input.image_urls"),
        (
            {"model": I2I, "input": {"prompt": "p", "image_urls": "https://a/b.png"}},
            422,
            "input.image_urls",
        ),
        ({"model": I2I, "input": {"prompt": "p", "image_urls": []}}, 422, "input.image_urls"),
        (
            {"model": I2I, "input": {"prompt": "p", "image_urls": ["https://a/b.png"] * 11}},
            422,
            "input.image_urls",
        ),
        ({"model": I2I, "input": {"prompt": "p", "image_urls": [1]}}, 422, "input.image_urls[0]"),
        (
            {
                "model": I2I,
                "input": {"prompt": "p", "image_urls": ["https://a/x.png", "http://a/b.png"]},
            },
            422,
            "input.image_urls[1]",
        ),
        (
            {"model": I2I, "input": {"prompt": "p", "image_urls": ["DATA:image/png;base64,AAAA"]}},
            422,
            "data:",
        ),
        (
            {"model": I2I, "input": {"prompt": "p", "image_urls": ["/home/me/cat.png"]}},
            422,
            "input.image_urls[0]",
        ),
        (
            {"model": I2I, "input": {"prompt": "p", "image_urls": ["https:///nohost.png"]}},
            422,
            "input.image_urls[0]",
        ),
        ({"model": T2I, "input": {"prompt": "p", "image_size": "7:5"}}, 422, "input.image_size"),
        (
            {"model": T2I, "input": {"prompt": "p", "aspect_ratio": "square"}},
            422,
            "input.aspect_ratio",
        ),
        (
            {"model": T2I, "input": {"prompt": "p", "output_format": "jpg"}},
            422,
            "input.output_format",
        ),
        (
            {"model": T2I, "input": {"prompt": "p", "output_format": "webp"}},
            422,
            "input.output_format",
        ),
        ({"model": T2I, "input": {"prompt": "p", "nsfw_checker": 1}}, 422, "input.nsfw_checker"),
        (
            {"model": T2I, "input": {"prompt": "p", "nsfw_checker": "false"}},
            422,
            "input.nsfw_checker",
        ),
    ],
)
def test_invalid_bodies_are_refused_naming_the_field(
    fake, api, body: Any, code: int, field: str
) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, answer = api.create(body=raw)
    assert status == code
    assert answer["code"] == code
    assert answer["data"] is None
    assert field in answer["msg"]
    assert fake.stats.invalid == 1
    assert fake.stats.tasks_created == 0


@pytest.mark.parametrize(
    "fields",
    [
        {"prompt": "x" * 20000},
        {"prompt": "p", "image_size": "21:9", "output_format": "jpeg", "nsfw_checker": False},
        {"prompt": "p", "aspect_ratio": "auto", "image_size": None},
        {"prompt": "p", "image_urls": "ignored for text-to-image"},
        {"prompt": "p", "something_new": 1},
    ],
)
def test_valid_text_to_image_bodies_are_accepted(api, fields: dict[str, Any]) -> None:
    body = json.dumps({"model": T2I, "input": fields}).encode()
    assert api.create(body=body)[0] == 200


def test_valid_image_to_image_is_accepted(fake, api) -> None:
    urls = [f"https://cdn.example.com/{i}.png" for i in range(10)]
    task_id = api.task_id("edit", model=I2I, image_urls=urls)
    assert fake.tasks[task_id].model == I2I
    assert fake.tasks[task_id].body["input"]["image_urls"] == urls


def test_validation_comes_after_the_rate_limit(make_fake, api_for) -> None:
    api = api_for(make_fake(create_per_second=1))
    assert api.create(body=b"nope")[0] == 400
    assert api.create(body=b"nope")[0] == 429


# -- records and states -----------------------------------------------------------------------


def test_a_task_waits_then_generates_then_succeeds(make_fake, api_for, clock) -> None:
    fake = make_fake(duration=8.0)
    api = api_for(fake)
    body = {
        "model": T2I,
        "input": {"prompt": "a banana", "image_size": "16:9", "output_format": "png"},
    }
    raw = json.dumps(body, separators=(",", ":")).encode()
    task_id = api.task_id(body=raw)
    waiting = api.record(task_id)
    assert list(waiting) == SEED_RECORD_KEYS
    assert waiting["taskId"] == task_id
    assert waiting["model"] == T2I
    assert waiting["state"] == "waiting"
    assert isinstance(waiting["param"], str)
    assert json.loads(waiting["param"]) == body
    assert waiting["param"] == raw.decode()  # compact, in the request's order, like the seeds
    assert waiting["resultJson"] is None
    assert waiting["failCode"] is None
    assert waiting["failMsg"] is None
    assert waiting["costTime"] is None
    assert waiting["completeTime"] is None
    assert isinstance(waiting["createTime"], int)

    clock.advance(1.999)
    assert api.record(task_id)["state"] == "waiting"
    clock.advance(0.001)  # a quarter of the duration
    generating = api.record(task_id)
    assert generating["state"] == "generating"
    assert generating["resultJson"] == ""
    assert generating["completeTime"] is None

    clock.advance(6.0)
    done = api.record(task_id)
    assert list(done) == SEED_RECORD_KEYS
    assert done["state"] == "success"
    result = json.loads(done["resultJson"])
    assert result == {"resultUrls": [f"https://results.fake-nanobanana.test/files/{task_id}/0.png"]}
    assert done["costTime"] == 8000
    assert done["completeTime"] - done["createTime"] == 8000
    assert done["createTime"] == waiting["createTime"]
    assert done["failCode"] is None
    assert done["failMsg"] is None
    task = fake.tasks[task_id]
    assert task.state == "success"
    assert [task.state_at(t) for t in (0.0, 2.0, 8.0)] == ["waiting", "generating", "success"]


def test_the_envelope_of_a_record_is_the_seeds(api) -> None:
    task_id = api.task_id()
    status, body = api.query(task_id)
    assert status == 200
    assert list(body) == ["code", "msg", "data"]
    assert body["code"] == 200
    assert body["msg"] == "success"
    status, body = api.create()
    assert body == {"code": 200, "msg": "success", "data": {"taskId": body["data"]["taskId"]}}


def test_times_are_real_milliseconds_under_time_scale(make_fake, api_for, clock) -> None:
    fake = make_fake(duration=100.0, time_scale=0.01)
    api = api_for(fake)
    first = api.record(api.task_id())
    clock.advance(0.5)
    task_id = api.task_id()
    clock.advance(1.0)
    record = api.record(task_id)
    assert record["state"] == "success"
    assert record["costTime"] == 1000  # 100 provider seconds at 0.01 = 1 real second
    assert record["createTime"] - first["createTime"] == 500
    task = fake.tasks[task_id]
    assert task.created_at == pytest.approx(0.5)
    assert task.duration == pytest.approx(1.0)
    assert task.finished_at == pytest.approx(1.5)


def test_a_failed_task_reports_code_and_message(make_fake, api_for, clock) -> None:
    fake = make_fake(fail_rate=1.0, duration=1.0)
    api = api_for(fake)
    task_ids = [api.task_id(f"p{i}") for i in range(40)]
    clock.advance(0.5)
    assert api.record(task_ids[0])["state"] == "generating"
    clock.advance(0.5)
    records = [api.record(task_id) for task_id in task_ids]
    for record in records:
        assert list(record) == SEED_RECORD_KEYS
        assert record["state"] == "fail"
        assert record["failCode"] == "500"
        assert isinstance(record["failMsg"], str)
        assert record["failMsg"]
        assert record["resultJson"] is None
        assert record["costTime"] == 1000
    complete_times = {record["completeTime"] is None for record in records}
    assert complete_times == {True, False}  # completeTime is sometimes null on fail
    task = fake.tasks[task_ids[0]]
    assert task.failed
    assert task.fail_code == "500"
    assert task.fail_msg == records[0]["failMsg"]


def test_custom_fail_codes_and_callables(make_fake, api_for, clock) -> None:
    fake = make_fake(
        fail_rate=lambda body: "bad" in body["input"]["prompt"],
        duration=lambda body: len(body["input"]["prompt"]),
        fail_codes=[("400", "flagged by the safety checker")],
    )
    api = api_for(fake)
    good = api.task_id("good")
    bad = api.task_id("bad!")
    assert fake.tasks[good].duration == 4.0
    clock.advance(4.0)
    assert api.record(good)["state"] == "success"
    record = api.record(bad)
    assert (record["state"], record["failCode"], record["failMsg"]) == (
        "fail",
        "400",
        "flagged by the safety checker",
    )
    task = fake.tasks[good]
    assert (task.failed, task.fail_code, task.fail_msg) == (False, None, None)


def test_a_duration_callable_must_not_go_negative(make_fake, api_for) -> None:
    api = api_for(make_fake(duration=lambda body: -1.0))
    with pytest.raises(ValueError, match="duration"):
        api.create()


def test_a_zero_duration_task_is_done_at_once(make_fake, api_for) -> None:
    fake = make_fake(duration=0.0)
    api = api_for(fake)
    assert api.record(api.task_id())["state"] == "success"
    assert fake.stats.active == 0


def test_durations_and_ids_are_reproducible_from_the_seed(clock) -> None:
    def plan(seed: int) -> list[tuple[str, float, bool]]:
        fake = FakeNanoBanana(tier=None, seed=seed, fail_rate=0.5, duration=(1.0, 3.0), clock=clock)
        body = json.dumps({"model": T2I, "input": {"prompt": "p"}}).encode()
        for _ in range(20):
            fake.handle(
                method="POST",
                path="/api/v1/jobs/createTask",
                authorization="Bearer sk-test",
                body=body,
            )
        return [(t.task_id, t.duration, t.failed) for t in fake.tasks.values()]

    first = plan(7)
    assert first == plan(7)
    assert first != plan(8)
    assert all(1.0 <= duration <= 3.0 for _, duration, _ in first)
    assert len({duration for _, duration, _ in first}) == 20
    assert {failed for _, _, failed in first} == {True, False}
    assert all(task_id.startswith("task_") for task_id, _, _ in first)


def test_jpeg_results_have_jpg_urls(fake, api, clock) -> None:
    task_id = api.task_id(output_format="jpeg")
    clock.advance(10.0)
    url = json.loads(api.record(task_id)["resultJson"])["resultUrls"][0]
    assert url.endswith(f"/files/{task_id}/0.jpg")
    reply = api.result(url)
    assert reply.status == 200
    assert reply.content_type == "image/jpeg"
    assert reply.body.startswith(b"\xff\xd8")


def test_result_base_url_can_be_fixed(make_fake, api_for, clock) -> None:
    fake = make_fake(result_base_url="https://cdn.example.test/")
    api = api_for(fake)
    task_id = api.task_id()
    clock.advance(10.0)
    urls = json.loads(api.record(task_id)["resultJson"])["resultUrls"]
    assert urls == [f"https://cdn.example.test/files/{task_id}/0.png"]
    assert fake.result_base_url == "https://cdn.example.test"


# -- not found and routing --------------------------------------------------------------------


def test_unknown_tasks_are_404(fake, api) -> None:
    real = api.task_id()
    prefix = real[:-8]
    for task_id in [
        "task_xxxxxxxxxxxxx",
        "00000000-0000-0000-0000-000000000000",
        prefix + "00000001",  # not created yet
        prefix + "0000000g",
        prefix + "+0000000",
        prefix + "0_000000",
        prefix + "000000000",
        real.upper(),
    ]:
        status, body = api.query(task_id)
        assert status == 404, task_id
        assert body == {"code": 404, "msg": "Task not found", "data": None}
        assert task_id not in fake.tasks
    assert real in fake.tasks
    assert 3 not in fake.tasks
    with pytest.raises(KeyError):
        fake.tasks["task_nope"]
    assert fake.stats.not_found == 8


@pytest.mark.parametrize("query", ["", "taskId=", "taskId=%20", "other=1"])
def test_query_without_task_id_is_400(fake, query: str) -> None:
    reply = fake.handle(
        method="GET", path="/api/v1/jobs/recordInfo", query=query, authorization="Bearer sk-test"
    )
    assert reply.status == 400
    assert "taskId" in json.loads(reply.body)["msg"]


def test_other_paths_are_404_and_wrong_methods_405(fake) -> None:
    reply = fake.handle(method="GET", path="/api/v2/whatever")
    assert reply.status == 404
    assert json.loads(reply.body)["code"] == 404
    reply = fake.handle(method="GET", path="/api/v1/jobs/createTask")
    assert reply.status == 405
    assert ("allow", "POST") in reply.headers
    reply = fake.handle(method="POST", path="/api/v1/jobs/recordInfo")
    assert reply.status == 405
    assert ("allow", "GET") in reply.headers
    assert fake.handle(method="DELETE", path="/files/x/0.png").status == 405
    stats = fake.stats
    assert stats.other_requests == 1
    assert (stats.create_requests, stats.query_requests, stats.result_requests) == (1, 1, 1)


# -- result files -----------------------------------------------------------------------------


def test_result_files_exist_only_once_the_task_succeeded(make_fake, api_for, clock) -> None:
    fake = make_fake(duration=10.0)
    api = api_for(fake)
    task_id = api.task_id("a red banana")
    path = f"/files/{task_id}/0.png"
    assert api.result(path).status == 404
    clock.advance(10.0)
    reply = api.result(path)
    assert reply.status == 200
    assert reply.content_type == "image/png"
    assert reply.body.startswith(b"\x89PNG\r\n\x1a\n")
    for wrong in [
        f"/files/{task_id}/1.png",
        f"/files/{task_id}/0.jpg",
        f"/files/{task_id}",
        f"/files/{task_id}/0.png/x",
        "/files/task_unknown/0.png",
    ]:
        assert api.result(wrong).status == 404, wrong
    assert fake.stats.authorization_sent_to_result_host is False


def test_failed_tasks_have_no_files(make_fake, api_for, clock) -> None:
    api = api_for(make_fake(fail_rate=1.0))
    task_id = api.task_id()
    clock.advance(10.0)
    assert api.result(f"/files/{task_id}/0.png").status == 404


def test_authorization_sent_to_the_result_host_is_recorded(fake, api) -> None:
    api.result("/files/unknown/0.png", authorization="Bearer sk-test")
    assert fake.stats.authorization_sent_to_result_host is True
    fake.reset_stats()
    assert fake.stats.authorization_sent_to_result_host is False


def test_different_prompts_give_different_images(make_fake, api_for, clock) -> None:
    api = api_for(make_fake(duration=0.0))
    images = {}
    for prompt in ["a banana", "a banana!", "an apple"]:
        task_id = api.task_id(prompt)
        images[prompt] = api.result(f"/files/{task_id}/0.png").body
    again = api.result(f"/files/{api.task_id('a banana')}/0.png").body
    assert len(set(images.values())) == 3
    assert again == images["a banana"]


# -- stats, tasks, log ------------------------------------------------------------------------


def test_stats_reset_and_recent_requests(make_fake, api_for, clock) -> None:
    fake = make_fake(duration=5.0)
    api = api_for(fake)
    task_id = api.task_id()
    api.query(task_id)
    api.create(key=None)
    log = fake.recent_requests
    assert [(r.endpoint, r.status, r.fault, r.task_id) for r in log] == [
        ("create", 200, "ok", task_id),
        ("query", 200, "ok", task_id),
        ("create", 401, "ok", None),
    ]
    assert log[0].at == 0.0
    stats = fake.stats
    assert stats.create_requests == 2
    assert stats.query_requests == 1
    assert stats.tasks_created == 1
    assert stats.active == 1
    fake.reset_stats()
    stats = fake.stats
    assert stats.create_requests == stats.tasks_created == stats.unauthorized == 0
    assert stats.max_active == 1  # restarts from the tasks active now
    assert fake.recent_requests == ()
    assert len(fake.tasks) == 1  # tasks are kept
    clock.advance(5.0)
    fake.reset_stats()
    assert fake.stats.max_active == 0


def test_the_log_is_a_ring_buffer(fake, api) -> None:
    for _ in range(300):
        api.query("task_none")
    assert len(fake.recent_requests) == 256
    assert fake.stats.query_requests == 300


def test_tasks_view(make_fake, api_for, clock) -> None:
    fake = make_fake(duration=4.0, seed=3)
    api = api_for(fake)
    ids = [api.task_id(f"prompt {i}", request_id=f"r{i}", output_format="jpeg") for i in range(3)]
    assert list(fake.tasks) == ids
    assert len(fake.tasks) == 3
    task = fake.tasks[ids[1]]
    assert isinstance(task, FakeTask)
    assert task == fake.tasks[ids[1]]
    assert task != fake.tasks[ids[0]]
    assert task != "task"
    assert hash(task) == hash(fake.tasks[ids[1]])
    assert (task.task_id, task.request_id, task.prompt, task.model, task.output_format) == (
        ids[1],
        "r1",
        "prompt 1",
        T2I,
        "jpeg",
    )
    assert task.body == {"model": T2I, "input": {"output_format": "jpeg", "prompt": "prompt 1"}}
    assert json.loads(task.param) == task.body
    assert repr(task) == f"<FakeTask {ids[1]} {T2I} waiting>"
    clock.advance(4.0)
    assert task.state == "success"
    assert [t.task_id for t in fake.tasks.values()] == ids


def test_elapsed_follows_the_clock(fake, clock) -> None:
    assert fake.elapsed == 0.0
    clock.advance(2.5)
    assert fake.elapsed == 2.5


def test_memory_per_task_is_small(make_fake, api_for) -> None:
    fake = make_fake(duration=(1.0, 2.0))
    api = api_for(fake)
    bodies = [
        json.dumps({"model": T2I, "input": {"prompt": f"a banana number {i}"}}).encode()
        for i in range(1000)
    ]
    request_ids = [f"{i:08d}-0000-4000-8000-000000000000" for i in range(1000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for body, request_id in zip(bodies, request_ids, strict=True):
            api.create(body=body, request_id=request_id)
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert fake.stats.tasks_created == 1000
    # The body (as param) dominates; 100 000 tasks stay well under 50 MB.
    assert used / 1000 < 500, used / 1000


# -- faults in the state machine --------------------------------------------------------------


@pytest.mark.parametrize(
    ("rates", "message"),
    [
        ({"boom": 0.1}, "unknown fault"),
        ({"500": 1.5}, r"\[0, 1\]"),
        ({"500": -0.1}, r"\[0, 1\]"),
        ({"500": "0.5"}, r"\[0, 1\]"),
        ({"500": 0.6, "drop_after": 0.5}, "more than 1"),
        ({"record_null": 0.1}, "query"),
    ],
)
def test_faults_are_validated(rates: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Faults(create=rates)


def test_faults_value_semantics() -> None:
    faults = Faults(query={"record_null": 0.5}, slow_seconds=1.0)
    assert faults == Faults(query={"record_null": 0.5}, slow_seconds=1.0)
    assert hash(faults) == hash(Faults(query={"record_null": 0.5}, slow_seconds=1.0))
    assert faults.rates("query") == {"record_null": 0.5}
    assert faults.rates("create") == {}
    assert Faults(result=None).result == {}  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        faults.query["500"] = 1.0  # type: ignore[index]
    with pytest.raises(ValueError, match="slow_seconds"):
        Faults(slow_seconds=-1.0)


def test_script_is_validated_before_anything_is_queued(fake, api) -> None:
    with pytest.raises(ValueError, match="unknown endpoint"):
        fake.script("download", ["500"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown fault"):
        fake.script("create", ["500", "explode"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="query"):
        fake.script("create", ["record_null"])
    assert api.create()[0] == 200  # nothing was queued


def test_scripted_faults_come_first_in_order(fake, api) -> None:
    fake.faults = Faults(create={"500": 1.0})
    fake.script("create", ["drop_before", "ok"])
    fake.script("create", ["200_500"])
    assert api.create_reply().action == "refuse"
    assert api.create()[0] == 200
    assert api.create() == (
        200,
        {"code": 500, "msg": "Internal server error", "data": None},
    )
    assert api.create()[0] == 500  # the probabilities again
    stats = fake.stats
    assert stats.faults == 3
    assert stats.tasks_created == 1
    assert [r.fault for r in fake.recent_requests] == ["drop_before", "ok", "200_500", "500"]
    assert fake.recent_requests[0].status is None


def test_faults_before_the_work_do_nothing(make_fake, api_for) -> None:
    fake = make_fake(create_per_second=1)
    api = api_for(fake)
    fake.script("create", ["500", "drop_before", "200_500", "200_429", "502_html", "503_html"])
    for _ in range(6):
        api.create_reply()
    assert fake.stats.tasks_created == 0
    assert api.create()[0] == 200  # none of them used the rate window
    assert fake.stats.faults == 6


def test_html_error_pages(fake, api) -> None:
    fake.script("query", ["502_html", "503_html"])
    for status in (502, 503):
        reply = api.query_reply("task_x")
        assert reply.status == status
        assert reply.content_type == "text/html"
        assert f"<title>{status} ".encode() in reply.body
        assert reply.body.startswith(b"<html>")


def test_error_429_inside_a_200_envelope(make_fake, api_for, clock) -> None:
    fake = make_fake(tier="basic")
    api = api_for(fake)
    clock.advance(0.25)
    fake.script("create", ["200_429"])
    fake.script("query", ["200_429"])
    fake.script("result", ["200_429"])
    status, body = api.create()
    assert status == 200
    assert body == {
        "code": 429,
        "msg": "Rate limit exceeded",
        "data": {"retryAfter": 0.75, "limit": 5, "tier": "basic", "windowSeconds": 1},
    }
    assert api.query("task_x")[1]["data"]["limit"] == 20
    reply = api.result("/files/x/0.png")
    assert reply.status == 200
    assert json.loads(reply.body)["data"]["limit"] is None
    assert fake.stats.rate_limited == 0  # not a real HTTP 429


def test_record_null(fake, api) -> None:
    task_id = api.task_id()
    fake.script("query", ["record_null"])
    assert api.query(task_id) == (422, {"code": 422, "msg": "recordInfo is null", "data": None})
    assert api.query(task_id)[0] == 200


def test_drop_after_and_slow_do_the_work(make_fake, api_for, clock) -> None:
    fake = make_fake(duration=0.0, faults=Faults(slow_seconds=2.5))
    api = api_for(fake)
    fake.script("create", ["drop_after", "slow"])
    dropped = api.create_reply(request_id="one")
    assert dropped.action == "drop"
    assert dropped.status == 200
    slow = api.create_reply(request_id="two")
    assert slow.action == "slow"
    assert slow.slow_seconds == 2.5
    assert fake.stats.tasks_created == 2
    assert fake.recent_requests[0].status is None
    assert fake.recent_requests[1].status == 200
    task_id = json.loads(slow.body)["data"]["taskId"]
    fake.script("result", ["drop_after", "drop_after"])
    truncated = api.result(f"/files/{task_id}/0.png")
    assert truncated.action == "truncate"
    assert truncated.status == 200
    missing = api.result("/files/nothing/0.png")
    assert missing.action == "drop"  # a JSON error is simply not delivered


def test_probabilistic_faults_are_reproducible(make_fake, api_for) -> None:
    def kinds(seed: int) -> list[str]:
        fake = make_fake(
            seed=seed,
            faults=Faults(create={"500": 0.2, "drop_before": 0.2, "200_500": 0.1}),
        )
        api = api_for(fake)
        for _ in range(200):
            api.create_reply()
        return [record.fault for record in fake.recent_requests]

    first = kinds(1)
    assert first == kinds(1)
    assert first != kinds(2)
    counts = {kind: first.count(kind) for kind in set(first)}
    assert set(counts) == {"ok", "500", "drop_before", "200_500"}
    assert 50 < counts["ok"] < 150  # about half


def test_faults_on_one_endpoint_do_not_shift_the_draws_of_another(make_fake, api_for) -> None:
    def create_faults(extra: Faults) -> list[str]:
        fake = make_fake(seed=5, faults=extra)
        api = api_for(fake)
        for _ in range(50):
            api.create_reply()
            api.query_reply("task_x")
        return [r.fault for r in fake.recent_requests if r.endpoint == "create"]

    alone = create_faults(Faults(create={"500": 0.3}))
    assert alone == create_faults(Faults(create={"500": 0.3}, query={"500": 0.5}))


def test_faults_can_be_changed_at_run_time(fake, api) -> None:
    assert fake.faults == Faults()
    fake.faults = Faults(query={"500": 1.0})
    assert api.query("task_x")[0] == 500
    fake.faults = Faults()
    assert api.query("task_x")[0] == 404


def test_limits_can_change_while_the_fake_runs(make_fake, api_for, clock) -> None:
    fake = make_fake(tier="free", create_per_second=100)
    api = api_for(fake)
    api.task_id()
    assert api.create()[0] == 409
    fake.limits = attrs.evolve(fake.limits, max_active=3)
    api.task_id()
    api.task_id()
    assert api.create()[1]["data"] == {"limit": 3, "active": 3}
    fake.limits = TierLimits(name="custom", create_per_second=1)
    assert fake.tier == "custom"
    fake.limits = attrs.evolve(fake.limits, max_active=None)
    assert api.create()[0] == 429  # the second in progress already counted 6 creates
    clock.advance(1.0)
    api.task_id()
    assert api.create()[0] == 429
    with pytest.raises(ValueError, match="max_active"):
        fake.limits = TierLimits(name="x", max_active=0)
    assert fake.limits == TierLimits(name="custom", create_per_second=1)


def test_time_scale_and_limits_are_read_only_attributes() -> None:
    fake = FakeNanoBanana(time_scale=0.5)
    assert fake.time_scale == 0.5
    with pytest.raises(AttributeError):
        fake.time_scale = 1.0  # type: ignore[misc]
