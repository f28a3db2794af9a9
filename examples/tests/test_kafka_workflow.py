"""kafka-workflow's own scenarios, driven only by its messages, on the ported examples.

Each test names the kafka-workflow test it ports (GitHub ``awto/kafka-workflow``,
``src/test/java/org/js/effectful/kafka/workflow/EngineTest.java`` and the jest
tests of ``workflow-ecommerce``). Messages are the ones those tests send; ref ids
are read from what the workflow emitted (kafka-workflow's ``0:1`` are record
offsets, flowbridge's are ``<generation>.<seq>``), and outputs are compared per
topic, as EngineTest does.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

import examples.kafka_workflow  # noqa: F401 - registers the two workflows
from bridge.errors import MessageError
from flowbridge.testing import Runner

SAGA = "kw-trip-booking-saga"
CART = "kw-ecommerce"


def on(r: Runner, topic: str, key: str | None = None) -> list[Any]:
    """Values published to ``topic`` (optionally with ``key``), in order."""
    return [p.value for p in r.published if p.topic == topic and (key is None or p.key == key)]


def resume(ref: str, **fields: Any) -> str:
    """A resume record's value, as kafka-workflow's clients write it."""
    return json.dumps({"ref": ref, **fields})


def start_saga(r: Runner, thread: str, opts: str = "{}") -> dict[str, str]:
    """``new:{opts}``, then the four requests of step 1 (EngineTest's first record)."""
    r.kafka_workflow(thread, f"new:{opts}", workflow=SAGA)
    ids = {kind: on(r, f"saga-reserve-{kind}", thread) for kind in ("car", "hotel", "flight")}
    assert all(len(v) == 1 for v in ids.values()), ids
    refs = {kind: v[0] for kind, v in ids.items()}
    (timer,) = [p for p in r.published if p.topic == "workflow-scheduler"]
    key = timer.key
    assert timer.value == "1000"
    assert key is not None and key.startswith(f"{thread}|")
    refs["timer"] = json.loads(key.split("|", 1)[1])["ref"]
    assert len(set(refs.values())) == 4, "every request names its own ref"
    return refs


def test_all_resolved_completes_and_cancels_the_timer() -> None:
    """EngineTest.testTripBookingSaga, all resolved: three replies, a result, the timer off."""
    r = Runner()
    refs = start_saga(r, "thread1")
    r.kafka_workflow("thread1", resume(refs["flight"]))
    r.kafka_workflow("thread1", resume(refs["hotel"]))
    assert on(r, "workflow-result") == [], "no output before the last reply"
    r.kafka_workflow("thread1", resume(refs["car"]))

    assert on(r, "workflow-result", "thread1") == [
        {
            "car": {"id": refs["car"]},
            "hotel": {"id": refs["hotel"]},
            "flight": {"id": refs["flight"]},
        }
    ]
    timer_key = f'thread1|{{"ref":"{refs["timer"]}"}}'
    assert [(p.key, p.value) for p in r.published if p.topic == "workflow-scheduler"] == [
        (timer_key, "1000"),
        (timer_key, "0"),
    ]
    for kind in ("car", "hotel", "flight"):
        assert on(r, f"saga-cancel-{kind}") == []
    assert on(r, "workflow-error") == []
    assert r.result("thread1")["status"] == "completed"


def test_an_error_in_code_compensates_every_confirmed_reservation() -> None:
    """EngineTest, error in code (throwAfterHotel): each confirmed booking cancelled once."""
    r = Runner()
    refs = start_saga(r, "thread1", '{"throwAfterHotel":true}')
    for kind in ("flight", "car", "hotel"):
        r.kafka_workflow("thread1", resume(refs[kind]))

    cancels = [p for p in r.published if p.topic.startswith("saga-cancel-")]
    # Compensation runs in confirmation order: flight, car, then hotel.
    assert [(p.topic, p.value) for p in cancels] == [
        ("saga-cancel-flight", refs["flight"]),
        ("saga-cancel-car", refs["car"]),
        ("saga-cancel-hotel", refs["hotel"]),
    ]
    assert on(r, "workflow-error", "thread1") == ["something is wrong"]
    assert on(r, "workflow-scheduler") == ["1000", "0"]
    assert on(r, "workflow-result") == []
    run = r.result("thread1")
    assert run["status"] == "failed"
    assert run["error"] == "RuntimeError: something is wrong"


def test_a_failed_reservation_is_not_compensated() -> None:
    """EngineTest, one errored: the hotel answers with an error; car and flight are undone."""
    r = Runner()
    refs = start_saga(r, "thread1")
    r.kafka_workflow("thread1", resume(refs["flight"]))
    r.kafka_workflow("thread1", resume(refs["car"]))
    r.kafka_workflow("thread1", resume(refs["hotel"], error="hotel is not available"))

    assert on(r, "saga-cancel-flight") == [refs["flight"]]
    assert on(r, "saga-cancel-car") == [refs["car"]]
    assert on(r, "saga-cancel-hotel") == []
    assert on(r, "workflow-error", "thread1") == ["hotel is not available"]
    assert on(r, "workflow-scheduler") == ["1000", "0"]


def test_a_timeout_undoes_the_confirmed_and_withdraws_the_pending() -> None:
    """EngineTest, timeout: the scheduler's reply fires; the pending hotel is withdrawn too."""
    r = Runner()
    refs = start_saga(r, "thread1")
    r.kafka_workflow("thread1", resume(refs["flight"]))
    r.kafka_workflow("thread1", resume(refs["car"]))
    # What kafka-workflow's Scheduler sends when the delay is over: the key's suffix.
    r.kafka_workflow("thread1", json.dumps({"ref": refs["timer"]}))

    assert on(r, "saga-cancel-flight") == [refs["flight"]]
    assert on(r, "saga-cancel-car") == [refs["car"]]
    assert on(r, "saga-cancel-hotel") == [refs["hotel"]], "the pending reservation is withdrawn"
    assert on(r, "workflow-error", "thread1") == ["timeout"]
    assert on(r, "workflow-scheduler") == ["1000"], "a fired timer is not cancelled"


def test_a_reply_value_is_ignored_and_an_object_error_is_its_json() -> None:
    """kafka-workflow (verified on its runtime): the reply's value is not the booking id."""
    r = Runner()
    refs = start_saga(r, "t")
    r.kafka_workflow("t", resume(refs["car"], value={"id": "CAR-7"}))
    r.kafka_workflow("t", resume(refs["flight"], error={"code": 42}))

    # kafka-workflow sends String(error) = "[object Object]"; flowbridge sends its JSON.
    assert on(r, "workflow-error", "t") == ['{"code": 42}']
    assert on(r, "saga-cancel-car") == [refs["car"]], "the booking id is the ref id"


def test_unknown_duplicate_and_late_refs_change_nothing() -> None:
    """kafka-workflow ignores an unknown or repeated ref; flowbridge records it and goes on."""
    r = Runner()
    refs = start_saga(r, "t")
    before = len(r.published)
    r.kafka_workflow("t", resume("9.9"))
    r.kafka_workflow("t", resume(refs["car"]))
    r.kafka_workflow("t", resume(refs["car"]))  # a second reply to the same request
    assert len(r.published) == before
    assert r.result("t")["status"] in ("running", "waiting")
    warnings = [h for h in r.history("t") if h["kind"] == "run.warning"]
    assert len(warnings) == 2, warnings

    r.kafka_workflow("t", resume(refs["hotel"]))
    r.kafka_workflow("t", resume(refs["flight"]))
    assert r.result("t")["status"] == "completed"
    with pytest.raises(MessageError, match="has finished"):
        r.kafka_workflow("t", resume(refs["car"]))


def test_a_second_new_is_ignored_not_a_restart() -> None:
    """kafka-workflow restarts a thread on a repeated ``new:``; flowbridge's start is idempotent."""
    r = Runner()
    refs = start_saga(r, "t")
    r.kafka_workflow("t", "new:{}", workflow=SAGA)
    assert len(on(r, "saga-reserve-car")) == 1, "no second set of reservations"
    for kind in ("car", "hotel", "flight"):
        r.kafka_workflow("t", resume(refs[kind]))
    assert r.result("t")["status"] == "completed"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("not json", "not JSON"),
        ('"just a string"', "JSON object"),
        ('{"ref": 7}', "'ref' must be a non-empty string"),
        ('{"ref": "1.1", "valeu": 1}', "unknown field(s) 'valeu'"),
        ('{"ref": "1.1", "value": 1, "error": "x"}', "not both"),
        ("new:{oops", "new: is not followed by JSON"),
    ],
)
def test_bad_records_are_refused_with_the_reason(value: str, reason: str) -> None:
    """What kafka-workflow drops or crashes on, flowbridge dead-letters with a reason."""
    r = Runner()
    start_saga(r, "t")
    with pytest.raises(MessageError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        r.kafka_workflow("t", value, workflow=SAGA)
    assert r.result("t")["status"] in ("running", "waiting"), "the run is untouched"


def test_a_resume_for_an_unknown_thread_and_a_new_without_workflow_are_refused() -> None:
    """kafka-workflow drops a resume before ``new:`` with a warning; here the DLQ says why."""
    r = Runner()
    with pytest.raises(MessageError, match="unknown run 'nobody'"):
        r.kafka_workflow("nobody", resume("1.1"))
    with pytest.raises(MessageError, match="names no workflow"):
        r.kafka_workflow("t", "new:{}")
    with pytest.raises(MessageError, match="kw-trip-bokking-saga"):
        r.kafka_workflow("t", "new:{}", workflow="kw-trip-bokking-saga")


# --- the e-commerce cart -------------------------------------------------------------------


def signal(value: dict[str, Any]) -> str:
    """A signal to the cart: a resume of its named ref ``main`` (EngineTest's form)."""
    return json.dumps({"value": value, "ref": "main"})


def add(product: str, quantity: int) -> str:
    return signal({"type": "addToCart", "item": {"quantity": quantity, "productId": product}})


def email(address: str) -> str:
    return signal({"type": "updateEmail", "email": address})


def live_timer(r: Runner, thread: str) -> str:
    """The ref of the thread's armed timer: each step arms one, then cancels the one before."""
    armed = [
        p.key
        for p in r.published
        if p.topic == "workflow-scheduler" and p.key.startswith(f"{thread}|") and p.value != "0"
    ]
    return str(json.loads(armed[-1].split("|", 1)[1])["ref"])


def test_the_engine_test_cart_sequence_interleaving_two_carts() -> None:
    """EngineTest.testECommerce: two threads interleaved; thread1 checks out, thread2 stays."""
    r = Runner()
    r.kafka_workflow("thread1", 'new:{"abandonedCartTimeoutMS":2000}', workflow=CART)
    r.kafka_workflow("thread1", email("someone@example.com"))
    r.kafka_workflow("thread1", add("teapot", 10))
    r.kafka_workflow("thread2", 'new:{"abandonedCartTimeoutMS":1000}', workflow=CART)
    r.kafka_workflow("thread2", email("vitaliy.akimov@gmail.com"))
    r.kafka_workflow("thread1", add("sigar", 11))
    r.kafka_workflow("thread1", add("teapot", 20))
    r.kafka_workflow("thread1", email("vitaliy.akimov@gmail.com"))
    r.kafka_workflow(
        "thread1",
        '{"value":{"type":"removeFromCart", "item":{"quantity":11,"productId":"sigar"}}, '
        '"ref":"main"}',
    )
    r.kafka_workflow("thread1", add("sugar", 2))
    r.kafka_workflow("thread1", signal({"type": "checkout"}))

    assert on(r, "workflow-result", "thread1") == [
        {
            "items": [
                {"quantity": 30, "productId": "teapot"},
                {"quantity": 2, "productId": "sugar"},
            ],
            "email": "vitaliy.akimov@gmail.com",
        }
    ]
    # new: arms a timer; each of the 8 signals cancels it, and all but the checkout re-arm.
    sched = [
        p.value
        for p in r.published
        if p.topic == "workflow-scheduler" and str(p.key).startswith("thread1|")
    ]
    assert sorted(sched) == sorted(["2000"] * 8 + ["0"] * 8), sched
    assert r.result("thread2")["status"] == "waiting", "thread2 stays in the store"
    assert on(r, "workflow-result", "thread2") == []


def test_cart_operations() -> None:
    """workflow-ecommerce index.test.ts, cart operations: early checkouts are refused."""
    r = Runner()
    r.kafka_workflow("t", 'new:{"abandonedCartTimeoutMS":50}', workflow=CART)
    r.kafka_workflow("t", signal({"type": "checkout"}))
    r.kafka_workflow("t", email("someone@example.com"))
    r.kafka_workflow("t", signal({"type": "checkout"}))
    for product, qty in (("teapot", 10), ("sigar", 11), ("teapot", 20)):
        r.kafka_workflow("t", add(product, qty))
    r.kafka_workflow("t", email("someone.else@example.com"))
    r.kafka_workflow(
        "t", signal({"type": "removeFromCart", "item": {"quantity": 11, "productId": "sigar"}})
    )
    r.kafka_workflow("t", add("sugar", 2))
    r.kafka_workflow("t", signal({"type": "getCart"}))
    r.kafka_workflow("t", signal({"type": "checkout"}))

    assert on(r, "checkoutError") == ["Must have items to check out!"] * 2
    cart = {
        "items": [{"quantity": 30, "productId": "teapot"}, {"quantity": 2, "productId": "sugar"}],
        "email": "someone.else@example.com",
    }
    assert on(r, "getCart") == [cart]
    assert on(r, "workflow-result", "t") == [cart]


def test_an_abandoned_cart_is_reminded_then_resumed() -> None:
    """index.test.ts, abandoned and resumed: the timer fires, a reminder, then a checkout."""
    r = Runner()
    r.kafka_workflow("t", 'new:{"abandonedCartTimeoutMS":50}', workflow=CART)
    r.kafka_workflow("t", email("someone@example.com"))
    r.kafka_workflow("t", json.dumps({"ref": live_timer(r, "t")}))
    assert on(r, "ecommerce-reminder", "t") == ["someone@example.com"]
    r.kafka_workflow("t", add("sugar", 2))
    r.kafka_workflow("t", signal({"type": "checkout"}))
    assert on(r, "workflow-result", "t") == [
        {"items": [{"quantity": 2, "productId": "sugar"}], "email": "someone@example.com"}
    ]


def test_a_cart_abandoned_twice_ends_abondoned() -> None:
    """index.test.ts, abandoned forever: two timeouts end the run with kafka-workflow's value."""
    r = Runner()
    r.kafka_workflow("t", 'new:{"abandonedCartTimeoutMS":50}', workflow=CART)
    r.kafka_workflow("t", email("someone@example.com"))
    r.kafka_workflow("t", json.dumps({"ref": live_timer(r, "t")}))
    r.kafka_workflow("t", json.dumps({"ref": live_timer(r, "t")}))
    assert on(r, "ecommerce-reminder", "t") == ["someone@example.com"]
    assert on(r, "workflow-result", "t") == ["abondoned"]


def test_an_error_on_main_fails_the_cart_and_cancels_its_timer() -> None:
    """kafka-workflow (verified on its runtime): ``{"ref":"main","error":"boom"}``."""
    r = Runner()
    r.kafka_workflow("t", 'new:{"abandonedCartTimeoutMS":50}', workflow=CART)
    r.kafka_workflow("t", json.dumps({"ref": "main", "error": "boom"}))
    assert on(r, "workflow-error", "t") == ["boom"]
    assert on(r, "workflow-scheduler") == ["50", "0"]


def test_the_same_signal_twice_is_applied_twice() -> None:
    """Named refs repeat: two identical records are two deliveries (deduped by offset)."""
    r = Runner()
    r.kafka_workflow("t", 'new:{"abandonedCartTimeoutMS":50}', workflow=CART)
    r.kafka_workflow("t", add("teapot", 1))
    r.kafka_workflow("t", add("teapot", 1))
    r.kafka_workflow("t", signal({"type": "getCart"}))
    assert on(r, "getCart") == [{"items": [{"quantity": 2, "productId": "teapot"}], "email": ""}]


def test_result_and_error_topics_can_be_renamed_or_turned_off() -> None:
    """FLOWBRIDGE_KW_RESULT_TOPIC / _ERROR_TOPIC: kafka-workflow's ``resultTopic`` settings."""
    r = Runner(env={"FLOWBRIDGE_KW_RESULT_TOPIC": "done", "FLOWBRIDGE_KW_ERROR_TOPIC": "off"})
    r.kafka_workflow("a", 'new:{"abandonedCartTimeoutMS":50}', workflow=CART)
    r.kafka_workflow("a", json.dumps({"ref": live_timer(r, "a")}))
    r.kafka_workflow("b", 'new:{"abandonedCartTimeoutMS":50}', workflow=CART)
    r.kafka_workflow("b", json.dumps({"ref": "main", "error": "boom"}))
    assert on(r, "done", "a") == ["abondoned"]
    assert on(r, "workflow-result") == [] and on(r, "workflow-error") == []
    assert r.result("b")["status"] == "failed"
