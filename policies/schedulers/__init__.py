"""Schedulers: which waiting jobs start, and which running jobs are preempted."""

from policies.schedulers.allox import AlloX
from policies.schedulers.backfill import EasyBackfill
from policies.schedulers.fifo import Fifo
from policies.schedulers.finish_time_fairness import FinishTimeFairness
from policies.schedulers.gandiva import Gandiva
from policies.schedulers.las import LeastAttainedService
from policies.schedulers.max_min_fairness import MaxMinFairness
from policies.schedulers.pollux import Pollux
from policies.schedulers.sjf import ShortestJobFirst
from policies.schedulers.srtf import ShortestRemainingTimeFirst
from policies.schedulers.throughput_policies import MaxSumThroughput, MinTotalDuration

__all__ = [
    "AlloX",
    "EasyBackfill",
    "Fifo",
    "FinishTimeFairness",
    "Gandiva",
    "LeastAttainedService",
    "MaxMinFairness",
    "MaxSumThroughput",
    "MinTotalDuration",
    "Pollux",
    "ShortestJobFirst",
    "ShortestRemainingTimeFirst",
]
