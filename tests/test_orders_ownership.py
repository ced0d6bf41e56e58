"""Whose book is printed (issue 10, fault 6's kind, for orders): an ``orders`` row whose
``user_id`` is not its story's ``user_id``, or whose story no longer exists, is never paid into
print, printed or shipped, on every path that could print it (the payment, a redelivered or
swept prepare_print, submit_print with its print files made, an operator's retry). A paid order
refused this way is failed with a reason naming ids only, and stays visible as needing a refund
decision (``status --order``, ``status``); once an operator corrects the row, retry prints it.

Through a real worker (tests/test_orders.py's, on its own broker database), a fake Lulu over
HTTP, and Stripe events signed with the ``stripe`` package and published by task name.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import test_orders as base
from tests.fakes.lulu_server import FakeLulu
from tests.support import Db, astronaut_png
from tests.test_orders import (
    BROKER,
    cli,
    events,
    new_order,
    operator,
    order_row,
    publish,
    signed,
    stripe,
    wait_job,
    wait_status,
)

# The orders worker (its own broker database), the fake Lulu and Stripe API, a completed story.
orders_db, lulu_fake, fake, stripe_api = base.orders_db, base.lulu_fake, base.fake, base.stripe_api
order_worker, story = base.order_worker, base.story


def _print_files(db: Db, order: str) -> list[Path]:
    root = db.storage / "orders" / order
    return sorted(root.rglob("*")) if root.exists() else []


def _foreign(db: Db, story_id: str, status: str = "pending_payment") -> tuple[str, str, str]:
    """An order of another user (a second family) for ``story_id``: (order, intent, its user)."""
    other = db.user()
    order, pi = new_order(db, story_id, status=status)
    db.exec("UPDATE orders SET user_id = :u WHERE id = :o", u=other, o=order)
    return order, pi, other


def _refused(db: Db, order: str, fake: FakeLulu, says: str) -> str:
    """The order failed as not printable, paid, with nothing printed; returns the reason."""
    row = wait_status(db, order, "failed", timeout=30)
    failures = [e for e in events(db, order) if e["outcome"] == "failed"]
    assert failures and failures[-1]["kind"] == "order.not_printable", [dict(e) for e in events(db, order)]
    reason = str(failures[-1]["message"])
    assert says in reason and "was taken: refund it" in reason, reason
    assert row["paid_at"] is not None and row["pod_order_id"] is None
    assert fake.jobs_for(order) == [] and _print_files(db, order) == []
    return reason


def test_a_payment_for_another_users_story_is_kept_and_refused_never_printed(
        orders_db: Db, story: str, fake: FakeLulu) -> None:
    db = orders_db
    # given an order whose user is not the story's (the API mixed up two families' rows)
    order, pi, other = _foreign(db, story)
    # when Stripe's payment for it arrives, as the API publishes it
    publish(BROKER, "orders.confirm_payment", signed(order, stripe(order, pi)))
    # then the payment is recorded (money taken), but the order fails and nothing is printed
    reason = _refused(db, order, fake, f"user {other} is not the owner of its story {story}")
    assert "2999 USD" in reason and pi in reason
    assert any(e["kind"] == "payment_intent.succeeded" and e["outcome"] == "applied" for e in events(db, order))
    # and operators see it: status --order gives the reason, status counts a refund decision
    code, out = cli(fake, "status", "--order", order)
    assert code == 0 and f"error: {reason}" in out
    code, out = cli(fake, "status", "--json")
    assert code == 0 and json.loads(out)["orders"]["paid_not_printable"] >= 1, out
    code, out = cli(fake, "status")
    assert "paid order(s) not printed" in out
    # and a retry cannot print it while the row is wrong
    code, out = cli(fake, "retry", "--order", order)
    assert code != 0 and "not its user's" in out and order_row(db, order)["status"] == "failed"
    publish(BROKER, "orders.prepare_print", {"order_id": order})
    publish(BROKER, "orders.submit_print", {"order_id": order})
    time.sleep(1.0)
    assert fake.jobs_for(order) == [] and order_row(db, order)["status"] == "failed"
    # when an operator corrects the row (the story's own user ordered it) and retries
    db.exec("UPDATE orders SET user_id = (SELECT user_id FROM stories WHERE id = :s) WHERE id = :o", s=story, o=order)
    code, out = cli(fake, "retry", "--order", order)
    assert code == 0, out
    # then it is printed, once
    wait_job(fake, order)
    assert len(fake.creates_for(order)) == 1


def _by_name(db: Db, order: str, fake: FakeLulu) -> None:
    publish(BROKER, "orders.prepare_print", {"order_id": order})


def _swept(db: Db, order: str, fake: FakeLulu) -> None:
    db.exec("UPDATE orders SET updated_at = now() - interval '1 hour' WHERE id = :o", o=order)
    listed = operator(fake, "from pipeline.operations.orders import sweep_orders; "
                            "print([i.kwargs for i in sweep_orders()])")
    assert order in listed


def _files_made(db: Db, order: str, fake: FakeLulu) -> None:
    # its print files were made (as when the row changed after they were): submit_print is next
    db.exec("""INSERT INTO order_steps (order_id, step, status, result)
               VALUES (:o, 'print_files', 'completed', CAST(:r AS jsonb))""",
            o=order, r=json.dumps({"interior_pages": 24, "interior_key": f"orders/{order}/print/interior.pdf",
                                   "interior_md5": "0" * 32, "cover_key": f"orders/{order}/print/cover.pdf",
                                   "cover_md5": "0" * 32}))
    publish(BROKER, "orders.submit_print", {"order_id": order})


@pytest.mark.parametrize("path", [_by_name, _swept, _files_made], ids=["prepare_print", "sweep", "submit_print"])
def test_a_paid_order_for_another_users_story_is_refused_on_every_print_path(
        orders_db: Db, story: str, fake: FakeLulu, path: Callable[[Db, str, FakeLulu], None]) -> None:
    db = orders_db
    # given a paid order whose user is not its story's
    order, _, other = _foreign(db, story, status="paid")
    # when a print step runs for it: sent by name (a redelivery), by the sweep, or with its files made
    path(db, order, fake)
    # then it is failed with the reason and nothing is sent to print
    _refused(db, order, fake, f"user {other} is not the owner of its story {story}")


def test_an_order_whose_story_was_deleted_is_refused_and_kept(orders_db: Db, story: str, fake: FakeLulu) -> None:
    db = orders_db
    # given orders, paid and unpaid, whose stories were deleted (the row gone, as a deployment
    # whose foreign keys do not restrict it would allow; here past the FK triggers)
    paid_story = db.story(db.photo(astronaut_png()))
    unpaid_story = db.story(db.photo(astronaut_png()))
    paid, _ = new_order(db, paid_story, status="paid")
    unpaid, pi = new_order(db, unpaid_story)
    for sid in (paid_story, unpaid_story):
        db.exec("SET LOCAL session_replication_role = replica; DELETE FROM stories WHERE id = :s", s=sid)
    # when its print step runs, and when the other's payment arrives
    publish(BROKER, "orders.prepare_print", {"order_id": paid})
    publish(BROKER, "orders.confirm_payment", signed(unpaid, stripe(unpaid, pi)))
    # then each is failed, saying so, with the payment kept on record (not "order not found")
    for order, sid in ((paid, paid_story), (unpaid, unpaid_story)):
        _refused(db, order, fake, f"story {sid} no longer exists")
    code, out = cli(fake, "status", "--order", unpaid)
    assert code == 0 and "no longer exists" in out
