"""Batches side by side: results in order, at most ``in_flight`` at once, jobs drawn in the caller's thread."""
from __future__ import annotations

import threading
import time

import pytest

from fits.scan.pipeline import in_order


def test_results_come_in_the_order_of_the_jobs_with_two_computed_at_once():
    lock, running, most = threading.Lock(), [0], [0]

    def work(k: int) -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.02 * (5 - k % 5))          # later jobs finish first
        with lock:
            running[0] -= 1
        return k * k

    out = list(in_order(work, range(12), in_flight=2))
    assert out == [(k, k * k) for k in range(12)]
    assert most[0] == 2


def test_jobs_are_drawn_in_the_callers_thread_at_most_in_flight_ahead():
    drawn, caller = [], threading.get_ident()

    def jobs():
        for k in range(10):
            drawn.append((k, threading.get_ident()))
            yield k

    for k, _ in in_order(lambda j: threading.get_ident(), jobs(), in_flight=3):
        assert len(drawn) <= k + 1 + 3          # job k is out, at most 3 more drawn
    assert {t for _, t in drawn} == {caller}


def test_one_in_flight_runs_in_the_callers_thread():
    caller = threading.get_ident()
    assert [r for _, r in in_order(lambda j: threading.get_ident(), range(4), in_flight=1)] == [caller] * 4


def test_an_exception_comes_at_its_jobs_turn_and_leaves_no_thread_behind():
    def work(k: int) -> int:
        if k == 3:
            raise RuntimeError("frame 3 is broken")
        return k

    seen = []
    before = threading.active_count()
    with pytest.raises(RuntimeError, match="frame 3 is broken"):
        for k, r in in_order(work, range(8), in_flight=2):
            seen.append(r)
    assert seen == [0, 1, 2]
    assert threading.active_count() == before


def test_leaving_early_cancels_the_rest():
    started = []

    def work(k: int) -> int:
        started.append(k)
        time.sleep(0.01)
        return k

    gen = in_order(work, range(100), in_flight=2)
    for k, _ in gen:
        if k == 1:
            break
    gen.close()
    assert len(started) <= 4


def test_in_flight_below_one_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        list(in_order(lambda j: j, range(3), in_flight=0))


def test_closed_from_one_of_its_own_threads():
    """A job that closes the generator (as the garbage collector may, in any thread): no thread
    waits for itself, the close succeeds and the jobs not started are dropped."""
    import time

    holder, errors = {}, []

    def work(j):
        if j == 1:
            time.sleep(0.2)                      # the caller is suspended at its first result by now
            try:
                holder["gen"].close()
            except Exception as e:               # noqa: BLE001 (recorded for the assertion)
                errors.append(e)
        return j

    gen = in_order(work, iter(range(6)), in_flight=2)
    holder["gen"] = gen
    assert next(gen) == (0, 0)
    time.sleep(0.5)
    assert errors == []
    assert list(gen) == []                       # closed: nothing more
