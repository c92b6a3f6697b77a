"""Steps in turn: a caller that has just stepped queues behind those already waiting."""

import threading

from timing import wait_until

from palaver.engine.scheduling.turns import StepTurns


def test_turns_go_in_the_order_they_were_asked_for_and_never_overlap():
    turns, order, inside = StepTurns(), [], []
    first_in, release = threading.Event(), threading.Event()
    queued = threading.Semaphore(0)

    def take(name: str, wait: threading.Event | None = None) -> None:
        queued.release()
        with turns.turn():
            inside.append(name)
            assert len(inside) == 1, "one turn at a time"
            order.append(name)
            if wait is not None:
                first_in.set()
                wait.wait(10)
            inside.remove(name)

    holder = threading.Thread(target=take, args=("a", release))
    holder.start()
    assert first_in.wait(10)
    waiters = []
    for name in "bcd":  # each asks while a holds its turn, one after another
        waiter = threading.Thread(target=take, args=(name,))
        waiter.start()
        queued.acquire()
        # It is in the queue before the next asks.
        wait_until(lambda: len(turns._queue) == len(waiters) + 1, 30, f"{name} queued", every=0.001)
        waiters.append(waiter)
    release.set()
    for thread in [holder, *waiters]:
        thread.join(10)
    assert order == ["a", "b", "c", "d"] and turns.turns_taken == 4
