"""Devices shared by fractional jobs (``TrainingJob.gpu_fraction`` < 1): per shared device, the jobs on it and the
share of the device each holds, so that the shares on a device never add up to more than one.

A device is whole-free (in ``FreeDevices``), held whole by one job, or *shared*: taken out of the free devices
when its first fractional job comes, and given back when its last one leaves. Whole-device placement never sees a
shared device (it is not free). A fractional job goes to a shared device with room before a whole free device is
opened for it (``choose``): by default the shared device it leaves the least room on (best-fit, which keeps large
leftovers for large fractions), or with ``fit="worst-fit"`` the one it leaves the most room on (spreads jobs);
ties go to the lowest device id. Shares are compared with a tolerance of ``EPSILON`` (fractions read from a file
such as 0.1 + 0.2 + 0.7 add up to 1 up to rounding)."""

from __future__ import annotations

import math
from collections.abc import Iterable

from sim.errors import ConfigError
from sim.platform.cluster import Cluster

EPSILON = 1e-9
"""Slack when comparing a device's shares with one."""

SHARE_FITS = ("best-fit", "worst-fit")
"""How ``SharedDevices.choose`` picks among shared devices with room."""


class SharedDevices:
    """The share book: ``jobs[device]`` maps each fractional job on a shared device to its fraction; ``used[device]``
    is their sum. Only shared devices are keys. ``copy`` gives an independent book for trial placements."""

    __slots__ = ("cluster", "fit", "jobs", "used")

    def __init__(self, cluster: Cluster, fit: str = "best-fit") -> None:
        if fit not in SHARE_FITS:
            raise ConfigError(f"sim.share_fit must be one of {', '.join(SHARE_FITS)}, got {fit!r}")
        self.cluster = cluster
        self.fit = fit
        self.jobs: dict[int, dict[int, float]] = {}
        self.used: dict[int, float] = {}

    def __bool__(self) -> bool:
        return bool(self.jobs)

    def copy(self) -> SharedDevices:
        """An independent copy (for a scheduling pass's trial placements)."""
        other = SharedDevices.__new__(SharedDevices)
        other.cluster, other.fit = self.cluster, self.fit
        other.jobs = {d: dict(on) for d, on in self.jobs.items()}
        other.used = dict(self.used)
        return other

    def is_shared(self, device: int) -> bool:
        return device in self.jobs

    def room(self, device: int) -> float:
        """Share of ``device`` not held by its fractional jobs (1 for a device that is not shared)."""
        return 1.0 - self.used.get(device, 0.0)

    def idle_share(self) -> float:
        """Shares of shared devices that no job holds, added up (device-equivalents allocated but unused)."""
        return math.fsum(1.0 - used for used in self.used.values())

    def fits(self, fraction: float, pools: Iterable[int]) -> bool:
        """Whether some shared device of ``pools`` has room for ``fraction``."""
        allowed = set(pools)
        pool_of = self.cluster.pool_of_device
        return any(used + fraction <= 1.0 + EPSILON and pool_of(d) in allowed for d, used in self.used.items())

    def choose(self, fraction: float, pools: Iterable[int]) -> int | None:
        """The shared device of ``pools`` to put ``fraction`` on (``fit``: best-fit or worst-fit by the room left,
        lowest id on ties), or None if none has room."""
        allowed = set(pools)
        pool_of = self.cluster.pool_of_device
        sign = 1.0 if self.fit == "best-fit" else -1.0
        best: tuple[float, int] | None = None
        for d, used in self.used.items():
            left = 1.0 - used - fraction
            if left >= -EPSILON and pool_of(d) in allowed:
                key = (sign * max(left, 0.0), d)
                if best is None or key < best:
                    best = key
        return None if best is None else best[1]

    def add(self, device: int, job_id: int, fraction: float) -> bool:
        """Put job ``job_id``'s ``fraction`` on ``device``; True if this opens the device (it was not shared).
        Raises ``ValueError`` if the device has no room (the engine validates before calling)."""
        on = self.jobs.get(device)
        opened = on is None
        if on is None:
            on = self.jobs[device] = {}
        elif job_id in on:
            raise ValueError(f"job {job_id} is already on device {device}")
        if self.used.get(device, 0.0) + fraction > 1.0 + EPSILON:
            if opened:
                del self.jobs[device]
            raise ValueError(f"device {device} has {self.room(device):.6g} of its share free, not {fraction:.6g}")
        on[job_id] = fraction
        self.used[device] = math.fsum(on.values())
        return opened

    def remove(self, device: int, job_id: int) -> bool:
        """Take job ``job_id`` off ``device``; True if that leaves the device with no job (no longer shared)."""
        on = self.jobs[device]
        del on[job_id]
        if on:
            self.used[device] = math.fsum(on.values())
            return False
        del self.jobs[device], self.used[device]
        return True
