"""Fair capacity: runs per backend and per user capped, the rest queued first come, first
served, except that a user at their cap does not hold up the users behind them; a user's
queue is capped too."""

from __future__ import annotations

import threading

import pytest

from studio.runs.capacity import Capacity, Limits, QueueFull, Ticket


def admitted(*tickets: Ticket) -> list[bool]:
    return [t.admitted.is_set() for t in tickets]


def test_no_limits_admit_everyone() -> None:
    capacity = Capacity()
    tickets = [capacity.enter("vllm", "ann") for _ in range(50)]
    assert all(admitted(*tickets)) and capacity.running() == 50


def test_the_backend_cap_queues_the_rest_in_order() -> None:
    capacity = Capacity(Limits(per_backend=2))
    a, b, c, d = (capacity.enter("ollama", user) for user in ("ann", "bob", "cy", "di"))
    assert admitted(a, b, c, d) == [True, True, False, False]
    assert (capacity.position(c), capacity.position(d)) == (0, 1)
    capacity.leave(a)
    assert admitted(c, d) == [True, False] and capacity.position(d) == 0
    other = capacity.enter("vllm", "ann")  # another backend has its own slots
    assert other.admitted.is_set()


def test_one_users_batch_cannot_starve_a_live_demo() -> None:
    """Ann's 30-row batch fills her 2 slots and waits; Bob's demo run goes at once."""
    capacity = Capacity(Limits(per_backend=4, per_user=2))
    batch = [capacity.enter("vllm", "ann") for _ in range(30)]
    assert sum(admitted(*batch)) == 2
    demo = capacity.enter("vllm", "bob")
    assert demo.admitted.is_set()
    capacity.leave(batch[0])
    assert batch[2].admitted.is_set() and not batch[3].admitted.is_set()


def test_a_waiter_that_gives_up_leaves_its_place() -> None:
    capacity = Capacity(Limits(per_backend=1))
    first = capacity.enter("ollama", "ann")
    second = capacity.enter("ollama", "bob")
    stop = threading.Event()
    stop.set()
    assert capacity.wait(second, give_up=stop.is_set, poll_s=0.01) is False
    third = capacity.enter("ollama", "cy")
    capacity.leave(first)
    assert third.admitted.is_set() and not second.admitted.is_set()


def test_waiting_threads_are_admitted_as_slots_free() -> None:
    capacity = Capacity(Limits(per_backend=2))
    done: list[int] = []
    lock = threading.Lock()

    def run(number: int) -> None:
        ticket = capacity.enter("vllm", f"user{number}")
        assert capacity.wait(ticket, give_up=lambda: False, poll_s=0.01)
        with lock:
            assert capacity.running("vllm") <= 2
            done.append(number)
        capacity.leave(ticket)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(done) == list(range(12)) and capacity.running() == 0


def test_raising_the_limits_admits_the_waiters() -> None:
    capacity = Capacity(Limits(per_backend=1))
    capacity.enter("vllm", "ann")
    waiting = capacity.enter("vllm", "bob")
    capacity.configure(Limits(per_backend=2))
    assert waiting.admitted.is_set()


def test_the_position_says_exactly_how_many_runs_are_ahead() -> None:
    """The page says "N runs ahead": the first waiter has none ahead of it, not one."""
    capacity = Capacity(Limits(per_backend=1))
    running = capacity.enter("ollama", "ann")
    first = capacity.enter("ollama", "bob")
    other_backend = capacity.enter("vllm", "cy")  # not in the same queue
    second = capacity.enter("ollama", "di")
    assert capacity.position(running) is None and capacity.position(other_backend) is None
    assert (capacity.position(first), capacity.position(second)) == (0, 1)
    capacity.leave(first)  # gave up waiting
    assert capacity.position(second) == 0


def test_a_user_over_the_queue_cap_is_refused_and_others_are_not() -> None:
    capacity = Capacity(Limits(per_backend=1, queued_per_user=2))
    capacity.enter("ollama", "ann")  # runs: not queued
    waiting = [capacity.enter("ollama", "ann") for _ in range(2)]
    with pytest.raises(QueueFull, match=r"2 runs waiting.*app\.max_queued_per_user.*"
                                        r"Nothing was sent"):
        capacity.enter("ollama", "ann")
    assert [capacity.position(t) for t in waiting] == [0, 1]  # the refused one left no place
    bob = capacity.enter("ollama", "bob")  # another user still queues
    assert capacity.position(bob) == 2
    # A Batch's rows are not capped (its concurrency bounds them), nor counted.
    rows = [capacity.enter("ollama", "ann", capped=False) for _ in range(5)]
    assert all(capacity.position(row) is not None for row in rows)
    capacity.leave(waiting[0])
    assert capacity.position(capacity.enter("ollama", "ann")) is not None  # room again


def test_the_queue_cap_refuses_only_runs_that_would_wait() -> None:
    capacity = Capacity(Limits(per_backend=1, queued_per_user=1))
    capacity.enter("ollama", "ann")
    capacity.enter("ollama", "ann")  # her one place in the queue
    assert capacity.enter("vllm", "ann").admitted.is_set()  # a free backend: no waiting
    with pytest.raises(QueueFull, match="1 run waiting"):
        capacity.enter("ollama", "ann")
