"""Fair capacity: runs per backend and per user capped, the rest queued first come, first
served, except that a user at their cap does not hold up the users behind them."""

from __future__ import annotations

import threading

from studio.capacity import Capacity, Limits


def admitted(*tickets: object) -> list[bool]:
    return [t.admitted.is_set() for t in tickets]  # type: ignore[attr-defined]


def test_no_limits_admit_everyone() -> None:
    capacity = Capacity()
    tickets = [capacity.enter("vllm", "ann") for _ in range(50)]
    assert all(admitted(*tickets)) and capacity.running() == 50


def test_the_backend_cap_queues_the_rest_in_order() -> None:
    capacity = Capacity(Limits(per_backend=2))
    a, b, c, d = (capacity.enter("ollama", user) for user in ("ann", "bob", "cy", "di"))
    assert admitted(a, b, c, d) == [True, True, False, False]
    assert (capacity.position(c), capacity.position(d)) == (1, 2)
    capacity.leave(a)
    assert admitted(c, d) == [True, False] and capacity.position(d) == 1
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
