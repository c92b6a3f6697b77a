"""A backend's count of the requests it holds: exact under threads, and never a bound."""

import threading
from collections import Counter

from palaver.engine.scheduling.in_flight import InFlight


def test_the_count_is_exact_when_threads_start_and_finish_at_once():
    in_flight = InFlight(Counter())
    barrier = threading.Barrier(8)

    def churn():
        barrier.wait()
        for _ in range(2000):
            in_flight.started()
            in_flight.finished()
        in_flight.started()  # each thread leaves one request held

    threads = [threading.Thread(target=churn) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert in_flight.pending == 8


def test_it_counts_past_any_bound_since_the_router_admits():
    in_flight = InFlight(Counter())
    for _ in range(10_000):
        in_flight.started()
    assert in_flight.pending == 10_000
