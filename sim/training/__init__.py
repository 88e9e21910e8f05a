"""Training: the subsystem that runs training jobs (arrivals, scheduling passes, preemption, placement)."""
