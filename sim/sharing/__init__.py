"""Fractional GPUs: pods asking for whole GPUs or a share of one, packed onto nodes by best-fit, worst-fit, random
or FGD (fragmentation gradient descent, Weng et al., USENIX ATC'23), with that paper's fragmentation measure."""

from sim.sharing.cluster import SharedCluster
from sim.sharing.fragmentation import FragmentationIndex, PodMix, node_fragmentation
from sim.sharing.inflate import inflate_pods
from sim.sharing.placers import FGD, PLACERS, BestFit, RandomFit, SharePlacer, WorstFit, make_placer
from sim.sharing.pods import PodRequestError, PodRequests
from sim.sharing.replay import SharingResults, replay

__all__ = [
    "FGD", "PLACERS", "BestFit", "FragmentationIndex", "PodMix", "PodRequestError", "PodRequests", "RandomFit",
    "SharePlacer", "SharedCluster", "SharingResults", "WorstFit", "inflate_pods", "make_placer",
    "node_fragmentation", "replay",
]
