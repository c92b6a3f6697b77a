"""Who runs when: the queued job, the worker loop, the fair queue, admission and models' step turns."""
