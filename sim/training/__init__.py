"""Training: the subsystem that runs training jobs (arrivals, scheduling passes, preemption, placement), the
contracts its policies implement, job records, and the training step-time and estimate models."""
