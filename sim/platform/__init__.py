"""The platform: clusters and their pools, the hardware catalog, which devices are free, fragmentation, and the
interconnect (``network``)."""
