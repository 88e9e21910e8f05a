"""The indexes a preemptive scheduler keeps across passes, so that a pass costs what it does (jobs tried, started,
preempted), not the length of the queue or the number of running jobs.

``QueueIndex``: the waiting jobs by a key that does not change while they wait (SRTF's work left, LAS's queue),
updated from ``view.entered`` and from the scheduler's own starts, and split by (allowed pools, gang size) so
that a pass skips a whole class of jobs that cannot find room at once.

``RunningIndex``: the running jobs a pass may preempt, per pool in a max-heap by key and per node. A running
job's key changes with time, so each entry keeps the key last computed as a bound: SRTF's work left only
falls while a job runs, so an old key bounds the current one from above and the heap's top is recomputed
until the top is current (``_top``). LAS (``CrossingIndex``) computes when each running job next crosses a
threshold and refreshes the jobs whose crossing is due before a pass, so its keys are always current.

Both are rebuilt from the view when a new run starts (``view.run_id``) and checked lazily: an entry whose job
is no longer waiting (or running) is dropped when a pass meets it.
"""

from __future__ import annotations

import heapq
import math
import operator
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterable
from itertools import compress, repeat
from typing import Any

from sim.platform.cluster import Cluster
from sim.training.contracts import ClusterView, PlacementTrial
from sim.training.jobs import JobStatus, JobView

RUNNING = JobStatus.RUNNING
WAITING = (JobStatus.QUEUED, JobStatus.PREEMPTED)
_LOAD = 256  # a class's sorted chunks hold _LOAD..2*_LOAD jobs (fewer once jobs leave)
_LOG = 4096  # the running index's log keeps its last _LOG..2*_LOG items


class Waiting:
    """A waiting job in the queue index: its key and when it entered the queue (``queued_since``)."""

    __slots__ = ("due", "job", "key", "memo", "since")

    def __init__(self, job: JobView, key: Any) -> None:
        self.job = job
        self.key = key
        self.since = job.queued_since
        self.due = math.inf  # LAS: when it becomes due for promotion
        # pools where no node had room for it: position in the index's log and the nodes' free devices then;
        # or where the pool had no room: position and the devices of the jobs above its level then
        self.memo: dict[int, tuple[int, Any]] | None = None


class JobClass:
    """Waiting jobs of one set of allowed pools and one gang size, as ``(key, Waiting)`` items sorted by key in
    chunks (a sorted list that stays cheap to insert into however long it grows). ``ci``, ``j``: a pass's
    cursor."""

    __slots__ = ("chunks", "ci", "gpus", "j", "maxes", "pools")

    def __init__(self, pools: tuple[int, ...], gpus: int) -> None:
        self.pools = pools
        self.gpus = gpus
        self.chunks: list[list[tuple[Any, Waiting]]] = []
        self.maxes: list[tuple[Any, Waiting]] = []
        self.ci = 0
        self.j = 0

    def add(self, item: tuple[Any, Waiting]) -> None:
        chunks, maxes = self.chunks, self.maxes
        if not maxes or item > maxes[-1]:
            if chunks and len(chunks[-1]) < 2 * _LOAD:
                chunks[-1].append(item)
                maxes[-1] = item
            else:
                chunks.append([item])
                maxes.append(item)
            return
        i = bisect_left(maxes, item)
        chunk = chunks[i]
        insort(chunk, item)
        if len(chunk) > 2 * _LOAD:
            tail = chunk[_LOAD:]
            del chunk[_LOAD:]
            chunks.insert(i + 1, tail)
            maxes.insert(i, chunk[-1])

    def remove(self, item: tuple[Any, Waiting]) -> None:
        i = bisect_left(self.maxes, item)
        chunk = self.chunks[i]
        self.delete(i, bisect_left(chunk, item))

    def delete(self, i: int, j: int) -> None:
        """Delete the item at chunk ``i``, position ``j``; a cursor there moves on to the next item."""
        chunk = self.chunks[i]
        del chunk[j]
        if not chunk:
            del self.chunks[i]
            del self.maxes[i]
        elif j == len(chunk):
            self.maxes[i] = chunk[-1]
            self.ci, self.j = i + 1, 0
            return
        self.ci, self.j = i, j

    def seek(self, key: Any) -> tuple[Any, Waiting] | None:
        """Put the cursor on the first item with a key above ``key`` (no item has it) and return that item."""
        probe = (key,)
        i = bisect_left(self.maxes, probe)
        if i == len(self.maxes):
            return None
        j = bisect_left(self.chunks[i], probe)
        self.ci, self.j = i, j
        return self.chunks[i][j]

    def current(self) -> tuple[Any, Waiting] | None:
        """The item at the cursor (after ``delete`` or ``seek``), or None past the end."""
        if self.ci < len(self.chunks):
            return self.chunks[self.ci][self.j]
        return None

    def __len__(self) -> int:
        return sum(len(c) for c in self.chunks)


class QueueIndex:
    """The waiting jobs by key, split into ``JobClass`` es. ``current``: each waiting job's entry."""

    def __init__(self) -> None:
        self.current: dict[int, Waiting] = {}
        self.classes: dict[tuple[tuple[int, ...], int], JobClass] = {}

    def __len__(self) -> int:
        return len(self.current)

    def add(self, job: JobView, key: Any) -> Waiting:
        old = self.current.get(job.job_id)
        if old is not None:
            self.discard(old)
        entry = Waiting(job, key)
        self.current[job.job_id] = entry
        pools = job.allowed_pools
        cls = self.classes.get((pools, job.gpus))
        if cls is None:
            cls = self.classes[pools, job.gpus] = JobClass(pools, job.gpus)
        cls.add((key, entry))
        return entry

    def discard(self, entry: Waiting) -> None:
        """Take a job's entry out of the index (it started, or its key changed)."""
        job = entry.job
        if self.current.get(job.job_id) is entry:
            del self.current[job.job_id]
        self.classes[job.allowed_pools, job.gpus].remove((entry.key, entry))

    def is_live(self, entry: Waiting) -> bool:
        """The job still waits since it entered with this entry (otherwise the entry is stale)."""
        job = entry.job
        return self.current.get(job.job_id) is entry and job.status in WAITING and job.queued_since == entry.since


class Running:
    """A running job the index may offer as a victim: where its devices are, and its key as last computed."""

    __slots__ = ("alive", "crossing", "ekey", "err", "estamp", "gpus", "hkey", "hstamp", "job", "job_id", "offset",
                 "per_node", "pool", "shared", "ubl", "valid_until", "version")

    def __init__(self, job: JobView, cluster: Cluster) -> None:
        self.job = job
        self.job_id = job.job_id
        self.gpus = job.gpus
        self.shared = job.gpu_fraction != 1.0  # a fractional job: its device frees only with the others on it
        devices = job.devices
        per_node: dict[int, int] = {}
        device_node = cluster.device_node
        for d in devices:
            node = device_node[d]
            per_node[node] = per_node.get(node, 0) + 1
        self.per_node = tuple(per_node.items())
        self.pool = cluster.node_pool[device_node[devices[0]]]
        self.alive = True
        self.version = 0
        self.hkey: Any = None  # key in the entry's heap item (an upper bound of its key from then on, in SRTF)
        self.hstamp = -1  # pass in which hkey was computed
        self.ubl: Any = None  # the level of the key last computed: an upper bound of its level from then on
        self.ekey: Any = None  # the key computed in pass estamp
        self.estamp = -1
        self.valid_until = -math.inf  # LAS: the key stays exact for passes before this time
        self.crossing = math.inf  # LAS: predicted time of the next threshold crossing, +- err
        self.err = 0.0
        self.offset = 0.0  # LAS: service not counted (before the last promotion)


def _neg(key: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(map(operator.neg, key))


class RunningIndex:
    """Running jobs started by the scheduler's own decisions, keyed by ``key(job, now)`` whose first element (the
    level) never rises while the job runs (SRTF's work left). Victims are offered as the old full scan chose them:
    lowest priority (largest key) first, per pool from a max-heap, per node from the node's list.

    ``node_max``: per node, an upper bound of its running jobs' levels, so that a search for victims above a
    level skips nodes without one (the bound is tightened whenever a search looks at the node)."""

    def __init__(self, key: Callable[[JobView, float], Any]) -> None:
        self.key = key
        self.cluster: Cluster | None = None
        self.entries: dict[int, Running] = {}
        self.heaps: list[list[tuple[Any, int, Running]]] = []
        self.by_node: list[list[tuple[Running, int]]] = []
        self.node_max: list[Any] = []
        self.ones: list[Any] = []  # per node, an upper bound of the levels of its one-device jobs
        self.blockers: list[Running | None] = []  # per node, the larger job last found on top of its one-device jobs
        # log of (level, entry) of the jobs that came to the index or rose to a level, from position log_base
        self.log: list[tuple[Any, Running]] = []
        self.log_base = 0
        self.pending: list[JobView] = []  # jobs the last decision started
        self.backlog: list[JobView] = []  # jobs started since the index was last brought up to a pass
        self.ready = True
        self.held = 0  # devices of the entries (live or not yet found finished)
        self.pass_no = 0
        self.top_level: Any = -math.inf  # the highest level of a running job, as of pass top_pass
        self.top_pass = -1
        self.now = 0.0
        self.version = 0  # the last heap item's version: unique, so that items never compare entries (a plain int, not
        # itertools.count, which copy.deepcopy no longer copies from Python 3.14 on; tenants' schedulers are copies)

    # ------------------------------------------------------------------------- keeping the index
    def begin(self, view: ClusterView, first: bool) -> None:
        """Start a pass: take in the jobs the last decision started (at the first pass, all running jobs)."""
        self.pass_no += 1
        self.now = view.now
        if first:
            cluster = self.cluster = view.cluster
            self.heaps = [[] for _ in cluster.pools]
            self.by_node = [[] for _ in range(cluster.num_nodes)]
            self.node_max = [-math.inf] * cluster.num_nodes
            self.ones = [-math.inf] * cluster.num_nodes
            self.blockers = [None] * cluster.num_nodes
            self.backlog = list(view.running)
            self.ready = False
            return
        self.backlog += self.pending
        self.pending = []
        self.ready = False

    def ensure(self) -> None:
        """Bring the index up to this pass before it is first asked anything (a pass that asks nothing of the
        running jobs leaves the started jobs waiting in ``backlog``)."""
        if self.ready:
            return
        self.ready = True
        assert self.cluster is not None
        for job in self.backlog:
            if job.status is RUNNING:
                self.add(job)
        self.backlog = []
        if self.held > 2 * self.cluster.num_devices:  # finished jobs not met yet: forget them
            self.sweep()
        else:
            limit = 2 * len(self.entries) + 64
            for heap in self.heaps:
                if len(heap) > limit:  # mostly stale items: rebuild
                    heap[:] = [item for item in heap if item[2].alive and item[1] == item[2].version]
                    heapq.heapify(heap)

    def add(self, job: JobView) -> None:
        assert self.cluster is not None
        old = self.entries.get(job.job_id)
        if old is not None:
            self.drop(old)
        entry = Running(job, self.cluster)
        self.setup(entry)
        self.entries[job.job_id] = entry
        self.held += entry.gpus
        self.evaluate(entry)
        level, node_max = entry.ubl, self.node_max
        for node, devices in entry.per_node:
            on_node = self.by_node[node]
            if len(on_node) > 8:
                on_node[:] = [(e, c) for e, c in on_node if e.alive]
            on_node.append((entry, devices))
            if level > node_max[node]:
                node_max[node] = level
            if entry.gpus == 1 and level > self.ones[node]:
                self.ones[node] = level

    def setup(self, entry: Running) -> None:
        """Fill in what a subclass keeps per entry, before its key is first computed."""

    def drop(self, entry: Running) -> None:
        """The job stopped running (preempted, or found finished); its heap items go stale."""
        if entry.alive:
            entry.alive = False
            self.held -= entry.gpus
            if self.entries.get(entry.job_id) is entry:
                del self.entries[entry.job_id]

    def discard_job(self, job_id: int) -> None:
        entry = self.entries.get(job_id)
        if entry is not None:
            self.drop(entry)

    def is_live(self, entry: Running) -> bool:
        if entry.alive and entry.job.status is RUNNING:
            return True
        self.drop(entry)
        return False

    def sweep(self) -> None:
        """Forget finished jobs and rebuild the heaps and node lists from the live entries."""
        for entry in list(self.entries.values()):
            self.is_live(entry)
        for heap in self.heaps:
            heap[:] = [item for item in heap if item[2].alive and item[1] == item[2].version]
            heapq.heapify(heap)
        for on_node in self.by_node:
            on_node[:] = [(e, c) for e, c in on_node if e.alive]

    # ------------------------------------------------------------------------- keys
    def exact(self, entry: Running) -> Any:
        """The entry's key now (computed at most once per pass)."""
        if entry.estamp != self.pass_no:
            key = entry.ekey = self.key(entry.job, self.now)
            entry.estamp = self.pass_no
            entry.ubl = key[0]
        return entry.ekey

    def push(self, entry: Running, key: Any) -> None:
        """Give the entry a heap item for ``key``, computed now (its older items go stale)."""
        self.version += 1
        entry.version = self.version
        entry.hkey = key
        entry.hstamp = self.pass_no
        heapq.heappush(self.heaps[entry.pool], (_neg(key), entry.version, entry))

    def is_exact(self, entry: Running) -> bool:
        """The key in the entry's heap item is its key now."""
        return entry.hstamp == self.pass_no

    def evaluate(self, entry: Running) -> None:
        """Compute the entry's key now and give it a fresh heap item (the old one goes stale); log its level."""
        self.push(entry, self.exact(entry))
        log = self.log
        log.append((entry.ubl, entry))
        if len(log) > 2 * _LOG:
            del log[:_LOG]
            self.log_base += _LOG

    def came_above(self, since: int, level: Any) -> list[Running] | None:
        """The entries that came to the index, or rose, to a level above ``level`` since log position ``since``
        (or were logged so and left since); None if the log no longer reaches back so far."""
        i = since - self.log_base
        if i < 0:
            return None
        return [entry for at, entry in self.log[i:] if at > level]

    def _top(self, pool: int) -> Running | None:
        """The live running job of ``pool`` with the largest key now (left on the heap), or None."""
        heap = self.heaps[pool]
        while heap:
            _, version, entry = heap[0]
            if version != entry.version or not self.is_live(entry):
                heapq.heappop(heap)
            elif self.is_exact(entry):
                return entry
            else:  # a bound: compute the key now (a fresh item) and look again
                heapq.heappop(heap)
                self.push(entry, self.exact(entry))
        return None

    def lowest_in_pool(self, pool: int, level: Any, devices: int) -> list[Running]:
        """Running jobs of ``pool`` above ``level``, lowest priority first, until they hold ``devices`` devices;
        ``[]`` if those above the level hold fewer (the heap is left as it was)."""
        picked, held = self._lowest(pool, level, devices)
        return picked if held >= devices else []

    def _lowest(self, pool: int, level: Any, devices: int) -> tuple[list[Running], int]:
        """``lowest_in_pool``'s jobs and the devices they hold, fewer than ``devices`` when every job above the
        level is taken."""
        self.ensure()
        heap = self.heaps[pool]
        picked: list[Running] = []
        held = 0
        while held < devices:
            entry = self._top(pool)
            if entry is None or not entry.hkey[0] > level:
                break
            heapq.heappop(heap)
            picked.append(entry)
            held += entry.gpus
        for entry in picked:
            heapq.heappush(heap, (_neg(entry.hkey), entry.version, entry))
        return picked, held

    # ------------------------------------------------------------------------- what a pass asks
    def any_above(self, level: Any) -> bool:
        """Some running job (not preempted in this pass) has a level above ``level``. The highest level is
        computed once a pass, and again after a preemption (nothing else changes it within a pass)."""
        if self.top_pass != self.pass_no:
            self.ensure()
            highest = -math.inf
            for pool in range(len(self.heaps)):
                top = self._top(pool)
                if top is not None and top.hkey[0] > highest:
                    highest = top.hkey[0]
            self.top_level, self.top_pass = highest, self.pass_no
        return self.top_level > level

    def changed_by(self, now: float) -> bool:
        """Whether a running job's level may have risen between the last pass and ``now``: never here (levels that
        only fall); ``CrossingIndex`` overrides it."""
        return False

    def preempted(self, entry: Running) -> None:
        self.drop(entry)
        if not entry.ubl < self.top_level:  # it may have held the highest level
            self.top_pass = -1

    def victims_for(self, waiting: Waiting, level: Any, trial: PlacementTrial) -> list[Running]:
        """Running jobs of a level above ``level`` whose preemption makes room for ``job``, or ``[]``, as the old
        full scan chose them.

        A gang that fits in one node: the node of an allowed pool where preempting the fewest devices (lowest
        priority first) frees enough, ties by the lowest node id. A larger gang: lowest-priority jobs of one
        allowed pool until the pool has enough free devices (the first such pool at equal cost). Nodes are
        looked at in id order, only those that may hold a job above the level, until none can cost less than
        the best so far.

        A pool where no node had room for the job is remembered with it: until a job that may be above its
        level comes to a node, or a node has more free devices, that node has no room for it again (levels only
        fall in SRTF; a LAS job's rise comes to its nodes), so the next search looks at the other nodes only.

        A fractional job's device frees only with the other jobs on it: in a node, a shared device counts as freed
        once all its jobs are picked, and its jobs are passed over if one of them is not above the level (the
        pass adds the rest of a shared device's jobs, ``sharers_of``)."""
        self.ensure()
        cluster = self.cluster
        assert cluster is not None
        free = trial.free
        count = free.count
        job = waiting.job
        gpus = job.gpus
        best: tuple[int, int] | None = None
        best_victims: list[Running] = []
        memo = waiting.memo
        pools = job.allowed_pools
        if gpus == 1:
            pool_free = free.pool_free
            for pool in pools:
                if pool_free[pool]:
                    break
            else:  # every allowed pool full: no node costs less than 1, and the first that costs 1 is the answer
                victim = self._one_device_victim(pools, level)
                if victim is not None:
                    return [victim]
                pools = ()  # no node costs 1 by its top job alone (or a shared device is in the way): the search below
        for pool in job.allowed_pools:
            if gpus <= cluster.pools[pool].devices_per_node:
                nodes = cluster.pool_nodes[pool]
                most = max(count[nodes.start:nodes.stop])
                floor = gpus - most if gpus > most else 0  # no node of the pool costs less
                if best is not None and (floor, nodes.start) > best:
                    continue
                if gpus == 1 and not most and pools:
                    # every node full: a node costs 1 only by a one-device job above the level, and the first
                    # that does is the answer (the other nodes cost more, or come later)
                    victim = self._one_device_victim((pool,), level)
                    if victim is not None:
                        node = cluster.device_node[victim.job.devices[0]]
                        if best is None or (1, node) < best:
                            best, best_victims = (1, node), [victim]
                    if best is not None and best[0] == 1:
                        continue
                # candidate nodes, by a lower bound of their cost: enough devices free or held by jobs that may
                # be above the level (by their bounds), and at least the smallest such job preempted
                start, stop = nodes.start, nodes.stop
                fresh = best is None
                node_max = self.node_max
                remembered = memo.get(pool) if memo is not None else None
                came = self.came_above(remembered[0], level) if remembered is not None else None
                if came is None:
                    scan: Iterable[int] = compress(nodes, map(operator.gt, node_max[start:stop], repeat(level)))
                else:  # only the nodes changed since none had room: a job above the level came, or more are free
                    changed = {node for entry in came for node, _ in entry.per_node if start <= node < stop}
                    now_free, then_free = count[start:stop], remembered[1]
                    if now_free != then_free:
                        changed.update(compress(nodes, map(operator.gt, now_free, then_free)))  # type: ignore[arg-type]
                    scan = [node for node in changed if node_max[node] > level]
                candidates = []
                by_node = self.by_node
                for node in scan:
                    held = 0
                    least = 1 << 30
                    for entry, devices in by_node[node]:
                        if entry.ubl > level and entry.alive:
                            held += devices
                            if entry.gpus < least:
                                least = entry.gpus
                    room = count[node]
                    if held and room + held >= gpus:
                        candidates.append((0 if room >= gpus else least if least > gpus - room else gpus - room,
                                           node))
                candidates.sort()
                for bound in candidates:
                    if best is not None and bound > best:
                        break
                    node = bound[1]
                    room = count[node]
                    on_node = self._above_on(node, level, 0)
                    if not on_node:
                        continue
                    picked: list[Running] = []
                    cost: float = 0
                    shares: dict[int, int] | None = None  # shared devices that can be freed: their jobs not picked
                    for _, entry, devices in on_node:
                        if room >= gpus:
                            break
                        if entry.shared:  # its device frees with the last of its jobs, if all are above the level
                            if shares is None:
                                shares = self._freeable_shares(node, on_node)
                            device = entry.job.devices[0]
                            left = shares.get(device)
                            if left is None:
                                continue
                            shares[device] = left - 1
                            room += left == 1
                            cost += entry.job.gpu_fraction
                        else:
                            room += devices
                            cost += entry.gpus
                        picked.append(entry)
                    if room >= gpus and (best is None or (cost, node) < best):
                        best, best_victims = (cost, node), picked
                if fresh and best is None:  # every node looked at, none with room
                    if memo is None:
                        memo = waiting.memo = {}
                    memo[pool] = (self.log_base + len(self.log), bytes(count[start:stop]))
            else:
                room = free.pool_free[pool]
                remembered = memo.get(pool) if memo is not None else None
                if remembered is not None:  # the jobs above the level held this many devices then, at most
                    came = self.came_above(remembered[0], level)
                    if came is not None:
                        held = remembered[1] + sum(entry.gpus for entry in came if entry.pool == pool)
                        if room + held < gpus:  # still no room: those jobs' levels only fell, or rose in the log
                            memo[pool] = (self.log_base + len(self.log), held)
                            continue
                picked, held = self._lowest(pool, level, gpus - room)
                if room + held >= gpus:
                    if best is None or (held, -1) < best:
                        best, best_victims = (held, -1), picked
                else:
                    if memo is None:
                        memo = waiting.memo = {}
                    memo[pool] = (self.log_base + len(self.log), held)
        return best_victims

    def _freeable_shares(self, node: int, above: list[tuple[Any, Running, int]]) -> dict[int, int]:
        """How many jobs share each shared device of ``node`` all of whose running jobs are among ``above``
        (``_above_on``'s answer): the devices that preempting jobs above the level can free."""
        counts: dict[int, int] = {}
        for _, entry, _ in above:
            if entry.shared:
                device = entry.job.devices[0]
                counts[device] = counts.get(device, 0) + 1
        running: dict[int, int] = {}
        for entry, _ in self.by_node[node]:
            if entry.alive and entry.shared and entry.job.status is RUNNING:
                device = entry.job.devices[0]
                running[device] = running.get(device, 0) + 1
        return {device: count for device, count in counts.items() if running[device] == count}

    def sharers_of(self, chosen: list[Running], level: Any) -> list[Running]:
        """For each fractional job among the ``chosen`` victims, the other running fractional jobs on its device, when
        every one of them is above ``level``: a shared device frees only once all its jobs stop. (A device with a job
        not above the level cannot be freed, and gives none.)"""
        picked = {victim.job_id for victim in chosen}
        extra: list[Running] = []
        for victim in chosen:
            if victim.shared:
                others = [mate for mate in self._device_mates(victim) if mate.job_id not in picked]
                if all(self.exact(mate)[0] > level for mate in others):
                    extra += others
                    picked.update(mate.job_id for mate in others)
        return extra

    def _device_mates(self, entry: Running) -> list[Running]:
        """The other running fractional jobs on the device of fractional job ``entry``."""
        assert self.cluster is not None
        device = entry.job.devices[0]
        return [other for other, _ in self.by_node[self.cluster.device_node[device]]
                if other is not entry and other.alive and other.shared and other.job.status is RUNNING
                and other.job.devices[0] == device]

    def _one_device_victim(self, pools: tuple[int, ...], level: Any) -> Running | None:
        """The one-device job above ``level`` that is the job of the largest key on its node, on the lowest such
        node of ``pools``, or None."""
        assert self.cluster is not None
        pool_nodes = self.cluster.pool_nodes
        ones, blockers = self.ones, self.blockers
        pass_no, exact = self.pass_no, self.exact
        found: Running | None = None
        found_node = 1 << 62
        for pool in pools:
            nodes = pool_nodes[pool]
            if nodes.start > found_node:
                continue
            for node in compress(nodes, map(operator.gt, ones[nodes.start:nodes.stop], repeat(level))):
                top = blockers[node]
                if (top is not None and top.alive and top.job.status is RUNNING
                        and (top.ekey if top.estamp == pass_no else exact(top))[0] > ones[node]):
                    continue  # the job last on top is above every one-device job of the node
                top = self._top_on(node, level)
                if top is not None:
                    if top.gpus == 1:
                        if top.shared and not all(self.exact(mate)[0] > level for mate in self._device_mates(top)):
                            return None  # a share whose device another job keeps: the general search decides
                        if node < found_node:
                            found, found_node = top, node
                        break
                    blockers[node] = top
        return found

    def _top_on(self, node: int, level: Any) -> Running | None:
        """The node's running job of the largest key, if that key's level is above ``level`` (else None),
        tightening the node's bounds. The job last found on top of the node (``blockers``) is looked at first,
        so that the jobs whose bounds are below its key are not computed."""
        pass_no, exact = self.pass_no, self.exact
        best = self.blockers[node]
        key: Any = None
        if best is not None:
            if best.alive and best.job.status is RUNNING:
                key = best.ekey if best.estamp == pass_no else exact(best)
            else:
                best = None
        top = one = -math.inf
        stale = False
        for entry, _ in self.by_node[node]:
            if not entry.alive:
                stale = True
                continue
            ubl = entry.ubl
            if ubl > level and entry is not best and (key is None or ubl >= key[0]):
                if entry.job.status is not RUNNING:
                    self.drop(entry)
                    stale = True
                    continue
                entry_key = entry.ekey if entry.estamp == pass_no else exact(entry)
                ubl = entry.ubl
                if entry_key[0] > level and (key is None or entry_key > key):
                    best, key = entry, entry_key
            if ubl > top:
                top = ubl
            if entry.gpus == 1 and ubl > one:
                one = ubl
        self.node_max[node] = top
        self.ones[node] = one
        if stale:
            self.by_node[node] = [(e, c) for e, c in self.by_node[node] if e.alive]
        return best if key is not None and key[0] > level else None

    def _above_on(self, node: int, level: Any, need: int) -> list[tuple[Any, Running, int]]:
        """(key, entry, its devices on the node) of the node's running jobs above ``level``, largest key first
        (tightening the node's ``node_max``); or ``[]`` if they cannot hold ``need`` devices by their bounds."""
        on_node = self.by_node[node]
        if need > 1 and sum(devices for entry, devices in on_node if entry.ubl > level) < need:
            return []
        out = []
        top = one = -math.inf
        stale = False
        for entry, devices in on_node:
            if not entry.alive:
                stale = True
                continue
            if entry.ubl > level:
                if entry.job.status is not RUNNING:
                    self.drop(entry)
                    stale = True
                    continue
                key = self.exact(entry)
                if key[0] > level:
                    out.append((key, entry, devices))
            if entry.ubl > top:
                top = entry.ubl
            if entry.gpus == 1 and entry.ubl > one:
                one = entry.ubl
        self.node_max[node] = top
        self.ones[node] = one
        if stale:
            on_node[:] = [(e, c) for e, c in on_node if e.alive]
        if len(out) > 1:
            out.sort(key=_first, reverse=True)
        return out


def _first(item: tuple[Any, ...]) -> Any:
    return item[0]




class CrossingIndex(RunningIndex):
    """Running jobs keyed by LAS queue, which rises while a job runs, at threshold crossings. Each entry predicts
    its next crossing; ``begin`` recomputes the entries whose crossing may have come (by a margin far above
    rounding), so every key the index holds is exact. ``next_crossing``: the earliest crossing as the old full
    scan computed it."""

    def __init__(self, key: Callable[[JobView, float], Any], thresholds: tuple[float, ...],
                 offset: Callable[[int], float], per_device: bool = False) -> None:
        super().__init__(key)
        self.thresholds = thresholds
        self.offset_of = offset
        self.per_device = per_device  # thresholds in seconds run (device-seconds / gang), not device-seconds
        self.crossings: list[tuple[float, int, Running]] = []  # (valid_until, version, entry)

    def setup(self, entry: Running) -> None:
        entry.offset = self.offset_of(entry.job_id)  # fixed while the job runs: only waiting jobs are promoted

    def ensure(self) -> None:
        if self.ready:
            return
        super().ensure()
        due = []
        crossings, now = self.crossings, self.now
        while crossings and crossings[0][0] <= now:
            _, version, entry = heapq.heappop(crossings)
            if version == entry.version and self.is_live(entry):
                due.append(entry)
        for entry in due:
            self.evaluate(entry)

    def sweep(self) -> None:
        super().sweep()
        self.crossings = [item for item in self.crossings if item[2].alive and item[1] == item[2].version]
        heapq.heapify(self.crossings)

    def exact(self, entry: Running) -> Any:
        if entry.estamp != self.pass_no and self.now < entry.valid_until:
            return entry.hkey
        return super().exact(entry)

    def is_exact(self, entry: Running) -> bool:
        return entry.hstamp == self.pass_no or self.now < entry.valid_until

    def evaluate(self, entry: Running) -> None:
        super().evaluate(entry)
        now, thresholds = self.now, self.thresholds
        i = entry.hkey[0]
        node_max = self.node_max
        for node, _ in entry.per_node:
            if i > node_max[node]:
                node_max[node] = i
            if entry.gpus == 1 and i > self.ones[node]:
                self.ones[node] = i
        if i < len(thresholds):
            scale = entry.gpus if self.per_device else 1
            rate = entry.gpus / scale  # service gained per second of running
            service = (entry.job.attained_service(now) - entry.offset) / scale
            crossing = now + (thresholds[i] - service) / rate
            # rounding error of this time and of computing it again later, with orders of magnitude to spare
            err = 1e-9 * (1.0 + abs(crossing) + (abs(thresholds[i]) + 2.0 * abs(entry.offset) + abs(service))
                          / rate)
            entry.crossing, entry.err, entry.valid_until = crossing, err, crossing - err
            heapq.heappush(self.crossings, (entry.valid_until, entry.version, entry))
        else:
            entry.crossing, entry.err, entry.valid_until = math.inf, 0.0, math.inf

    def changed_by(self, now: float) -> bool:
        """Whether a running job may have crossed a threshold by ``now``: an entry's crossing, less its margin, has
        come (the index is not changed)."""
        crossings = self.crossings
        stack = [0] if crossings else []
        while stack:  # the heap's items due by now, walked from its top
            i = stack.pop()
            valid_until, version, entry = crossings[i]
            if valid_until > now:
                continue  # nor any item below it
            if version == entry.version and entry.alive and entry.job.status is RUNNING:
                return True
            stack += [c for c in (2 * i + 1, 2 * i + 2) if c < len(crossings)]
        return False

    def next_crossing(self, now: float | None = None, started: Iterable[JobView] = ()) -> float:
        """min over live running jobs of ``now + (next threshold - service) / rate``, computed at ``now`` (default:
        the pass's time; rate: gpus, or 1 with ``per_device``). ``started``: running jobs not in the index yet,
        counted as the index would count them."""
        self.ensure()
        crossings, thresholds = self.crossings, self.thresholds
        now = self.now if now is None else now
        best = bound = math.inf
        taken = []
        while crossings and crossings[0][0] <= bound:
            item = heapq.heappop(crossings)
            entry = item[2]
            if item[1] != entry.version or not self.is_live(entry):
                continue
            taken.append(item)
            bound = min(bound, entry.crossing + entry.err)
            scale = entry.gpus if self.per_device else 1
            service = (entry.job.attained_service(now) - entry.offset) / scale
            i = bisect_right(thresholds, service)
            if i < len(thresholds):
                best = min(best, now + (thresholds[i] - service) * scale / entry.gpus)
        for item in taken:
            heapq.heappush(crossings, item)
        for job in started:
            scale = job.gpus if self.per_device else 1
            service = (job.attained_service(now) - self.offset_of(job.job_id)) / scale
            i = bisect_right(thresholds, service)
            if i < len(thresholds):
                best = min(best, now + (thresholds[i] - service) * scale / job.gpus)
        return best


class Indexes:
    """A scheduler instance's queue and running indexes, for one run. A copy (or pickle) of a scheduler drops
    them: the copy builds its own at its first pass."""

    def __init__(self, running: RunningIndex) -> None:
        self.queue = QueueIndex()
        self.running = running
        self.run_id: int | None = None
        self.last_now = -math.inf

    def __reduce__(self) -> tuple[Callable[[], None], tuple[()]]:
        return _nothing, ()

    def is_new_run(self, view: ClusterView) -> bool:
        """The view is of another run than the last pass: the indexes must be built anew. Time going back
        also counts, should a new run's ``run_id`` repeat an old one's."""
        return view.run_id != self.run_id or view.now < self.last_now

    def begin(self, view: ClusterView, key: Callable[[JobView], Any]) -> list[Waiting]:
        """Bring the indexes up to this pass (at the first, build them from the view); returns the entries of the
        jobs that entered the queue since the last pass (all waiting jobs at the first). ``key``: a waiting
        job's key."""
        first = self.run_id is None
        self.run_id, self.last_now = view.run_id, view.now
        self.running.begin(view, first)
        entered = view.queued if first else view.entered
        discard, add = self.running.discard_job, self.queue.add
        out = []
        for job in entered:
            discard(job.job_id)
            out.append(add(job, key(job)))
        return out

    def preempts_nothing(self, now: float) -> bool:
        """After a ``preemptive_pass`` decision, carried out, asked at ``now`` (none of the scheduler's jobs entered
        the queue or stopped since): no running job (those the decision started included) has a level (the key's
        first element) above the lowest level of a waiting job, and no running job's level has changed since that
        pass. A preemptive pass preempts only for a strictly lower level, so it would preempt nothing until a job
        enters the queue or stops, or a running job's level changes (SRTF's levels only fall; LAS's rise at
        threshold crossings, which ``RunningIndex.changed_by`` looks for)."""
        lowest: Any = None
        for cls in self.queue.classes.values():  # a class's first item has its lowest key (a stale one: lower)
            if cls.chunks:
                level = cls.chunks[0][0][0][0]
                if lowest is None or level < lowest:
                    lowest = level
        if lowest is None:
            return True
        running = self.running
        if running.cluster is None:
            return False
        for job in running.pending:  # started by the last decision, not in the index yet
            level = running.key(job, now)[0]
            if level > lowest or level != running.key(job, running.now)[0]:
                return False
        return not running.any_above(lowest) and not running.changed_by(now)


def _nothing() -> None:
    return None
