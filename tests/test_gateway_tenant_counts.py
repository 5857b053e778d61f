"""One in-flight cap per tenant across the workers of `costline serve --workers N`: SharedTenantCounts.

Two openings of one table file stand for two workers (``a`` is worker 0, ``b`` worker 1). Expected values are
counted by hand from the cap: with a cap of 3 the first three takes are admitted, whoever takes them. End to end
through real worker processes: tests/test_gateway_workers.py (test_a_tenants_in_flight_cap_holds_across_the_workers).
"""

from __future__ import annotations

import itertools
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from costline.serving.errors import GatewayError
from costline.serving.gateway.shared_limits import SharedTenantCounts, TenantCounts
from costline.serving.gateway.workers import WorkerSupervisor


def two_workers(tmp_path: Path, cap: int = 3, slots: int = 64) -> tuple[SharedTenantCounts, SharedTenantCounts]:
    table = SharedTenantCounts.create(tmp_path / "t", workers=2, slots=slots)
    return SharedTenantCounts(table, cap, 0), SharedTenantCounts(table, cap, 1)


@pytest.mark.parametrize("order", ["".join(o) for o in itertools.product("ab", repeat=5)])
def test_a_cap_of_3_admits_exactly_3_whichever_workers_take(tmp_path: Path, order: str) -> None:
    a, b = two_workers(tmp_path)
    worker = {"a": a, "b": b}
    assert [worker[w].take("acme") for w in order] == [True, True, True, False, False]
    assert not a.take("acme") and not b.take("acme")
    assert a.take("globex") and b.take("globex")  # another tenant has a cap of its own


@pytest.mark.parametrize(("held", "released_by", "then"), [
    ("aab", "a", "b"),  # a release on one worker frees a slot on the other
    ("aab", "b", "a"),
    ("bbb", "b", "a"),
])
def test_a_release_frees_one_slot(tmp_path: Path, held: str, released_by: str, then: str) -> None:
    a, b = two_workers(tmp_path)
    worker = {"a": a, "b": b}
    assert all(worker[w].take("acme") for w in held)
    worker[released_by].release("acme")
    assert worker[then].take("acme")
    assert not a.take("acme") and not b.take("acme")  # one freed, one taken: 3 again


@pytest.mark.parametrize(("held", "cleared", "free"), [
    ("abb", 1, 2),  # worker 1 held 2: cleared, 2 free
    ("abb", 0, 1),
    ("aaa", 1, 0),  # worker 1 held nothing
])
def test_clearing_a_workers_column_frees_what_it_held(tmp_path: Path, held: str, cleared: int, free: int) -> None:
    a, b = two_workers(tmp_path)
    worker = {"a": a, "b": b}
    assert all(worker[w].take("acme") for w in held)
    SharedTenantCounts.clear_worker(a.path, cleared)  # the supervisor saw worker `cleared` exit
    assert [a.take("acme") for _ in range(free + 1)] == [True] * free + [False]


def test_a_worker_clears_its_own_column_when_it_starts(tmp_path: Path) -> None:
    a, b = two_workers(tmp_path)
    assert b.take("acme") and b.take("acme") and a.take("acme")
    restarted = SharedTenantCounts(a.path, 3, 1)  # a new worker 1: the old one died holding 2
    restarted.clear()
    assert a.take("acme") and restarted.take("acme") and not a.take("acme")


def test_a_slot_whose_counts_are_all_0_is_free_for_another_tenant(tmp_path: Path) -> None:
    a, b = two_workers(tmp_path, slots=1)
    assert a.take("acme") and b.take("acme")
    a.release("acme")
    b.release("acme")
    # the one slot is globex's now: the whole cap of 3, not the fallback share (3 // 2 = 1)
    assert [a.take("globex") for _ in range(4)] == [True, True, True, False]


def test_a_full_table_falls_back_to_the_workers_share_and_says_so_once(tmp_path: Path, caplog) -> None:
    a, b = two_workers(tmp_path, slots=1)
    assert b.take("acme")  # acme holds the only slot
    with caplog.at_level(logging.WARNING, logger="costline.serving.gateway.shared_limits"):
        # globex has no slot: held to worker 0's share of the cap, 3 // 2 = 1, counted by worker 0 alone
        assert [a.take("globex") for _ in range(3)] == [True, False, False]
        assert b.take("globex")  # worker 1's share is its own
        a.release("globex")
        assert a.take("globex")
    assert [r.message.count("held by another tenant") for r in caplog.records] == [1, 1]  # once a worker
    assert b.take("acme") and a.take("acme") and not a.take("acme")  # acme still counted in the table


def test_requests_counted_on_a_share_are_counted_in_the_table_once_the_tenant_has_a_slot(tmp_path: Path) -> None:
    """Cap 4, two workers, one slot. Worker 0 admits globex's requests on its share (4 // 2 = 2: the third is refused,
    and its 429 names the share, 2) while acme holds the slot; acme's end, globex gets the slot: its two requests
    still running count there, so two more are admitted, not four (before: the table's sum alone, eight in flight);
    their releases come off the table."""
    a, b = two_workers(tmp_path, cap=4, slots=1)
    assert b.take("acme")
    assert [a.take("globex") for _ in range(3)] == [True, True, False] and a.refused_at == 2
    b.release("acme")
    assert [a.take("globex") for _ in range(3)] == [True, True, False] and a.refused_at == 4
    assert not b.take("globex") and b.refused_at == 4  # the other worker sees the four
    for _ in range(4):
        a.release("globex")
    assert [b.take("globex") for _ in range(5)] == [True, True, True, True, False]


def test_a_failing_file_falls_back_without_raising(tmp_path: Path, caplog) -> None:
    a, b = two_workers(tmp_path)
    assert a.take("acme")
    a.close()  # every later use of the file fails
    with caplog.at_level(logging.WARNING, logger="costline.serving.gateway.shared_limits"):
        assert [a.take("globex") for _ in range(2)] == [True, False]  # the share: 1
        a.release("globex")
        a.release("acme")  # a count it cannot give back: logged, not raised
    assert len(caplog.records) == 1 and "failed" in caplog.records[0].message
    assert b.take("acme") and b.take("acme") and not b.take("acme")  # acme's count stays (cleared on restart)


@pytest.mark.parametrize(("make", "match"), [
    (lambda p: p.write_bytes(b""), "not a costline in-flight table"),
    (lambda p: p.write_bytes(b"NOTATABLE" + bytes(100)), "not a costline in-flight table"),
    (lambda p: SharedTenantCounts.create(p, workers=2), "worker 2 is not one of the 2 workers"),
    (lambda p: None, "--workers"),
])
def test_a_table_that_cannot_serve_is_refused_saying_why(tmp_path: Path, make, match: str) -> None:
    path = tmp_path / "t"
    make(path)
    with pytest.raises(GatewayError, match=match):
        SharedTenantCounts(path, 3, 2)


def test_processes_taking_at_once_get_exactly_the_cap_between_them(tmp_path: Path) -> None:
    table = SharedTenantCounts.create(tmp_path / "t", workers=4)
    script = textwrap.dedent("""
        import sys
        from costline.serving.gateway.shared_limits import SharedTenantCounts
        counts = SharedTenantCounts(sys.argv[1], 25, int(sys.argv[2]))
        print(sum(counts.take("acme") for _ in range(20)))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(table), str(k)], stdout=subprocess.PIPE, text=True)
             for k in range(4)]
    admitted = [int(p.communicate(timeout=60)[0]) for p in procs]
    assert sum(admitted) == 25, admitted  # 80 takes, a cap of 25 across them: each process's own would be 80


def test_the_in_process_counts_forget_a_tenant_with_nothing_in_flight() -> None:
    counts = TenantCounts(2)
    assert [counts.take("acme") for _ in range(3)] == [True, True, False]
    counts.release("acme")
    counts.release("acme")
    assert counts == {} and counts.cap == 2


def test_the_supervisor_says_which_worker_exited_before_restarting_it() -> None:
    exited: list[int] = []
    now = [0.0]
    sup = WorkerSupervisor(2, lambda i: [sys.executable, "-c", f"import sys, time; time.sleep(120 * {i})"],
                           lambda i: {}, host="127.0.0.1", port=0, now=lambda: now[0], echo=lambda line: None,
                           on_exit=exited.append)
    try:
        sup.start()
        sup.workers[0].proc.wait(30)  # type: ignore[union-attr]
        sup.poll()
        assert exited == [0] and sup.workers[0].proc is None  # cleared before its restart is even due
        now[0] += sup.workers[0].delay_s
        sup.poll()
        assert sup.workers[0].proc is not None and exited == [0]  # restarted under index 0
    finally:
        sup.shutdown(5)


def test_a_failing_exit_hook_does_not_stop_the_supervision(caplog) -> None:
    def broken(index: int) -> None:
        raise OSError("gone")

    sup = WorkerSupervisor(1, lambda i: [sys.executable, "-c", "pass"], lambda i: {}, host="127.0.0.1", port=0,
                           echo=lambda line: None, on_exit=broken)
    try:
        sup.start()
        sup.workers[0].proc.wait(30)  # type: ignore[union-attr]
        with caplog.at_level(logging.ERROR, logger="costline.serving.gateway.workers"):
            sup.poll()
        assert sup.failed is None and sup.workers[0].restart_at is not None
        assert "cleaning up after gateway worker 0 failed" in caplog.text
    finally:
        sup.shutdown(5)
