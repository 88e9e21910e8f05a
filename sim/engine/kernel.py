"""The kernel: a clock, a documented same-time order of events, the run loop, the event log and the one way
policies are called. It knows nothing of jobs, requests or devices; subsystems (``sim.engine.subsystem``) do.

Events are simpy events scheduled with an explicit priority (``EventOrder``) on the kernel's
``simpy.Environment`` (``env``), whose heap is keyed ``(time, priority, creation number)``: at one instant,
completions run first, then arrivals, then timers; events of one kind at one instant in the order they were
created. Last come the end-of-instant calls (``at_end_of_instant``, ``EventOrder.SCHEDULE``): a scheduling pass
runs once all that happened at its instant is done. They run from the loop when the next event is later, without
an event of their own, and count as events. The clock jumps from event to event; nothing is polled.

A run may be paused: an end-of-instant call that calls ``pause()`` makes ``run`` return once that instant's
end-of-instant calls are done, with the rest of the run left as it was; the next ``run`` resumes there (an
environment that hands each scheduling decision to an agent, ``sim.gym``, drives a run so).

Callbacks take no argument. Each event is made already triggered, without simpy's ``__init__``, and carries its
callback as its value (``_At``); ``now`` is a plain attribute the loop sets before each step, so that the many
reads of the clock cost no property call.
"""

from __future__ import annotations

import enum
import gc
import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import simpy
from simpy.events import Event

from sim.errors import GpusimError, PolicyError

T = TypeVar("T")


class EventOrder(enum.IntEnum):
    """Priority of same-time events (lower first)."""

    FINISH = 10
    ARRIVAL = 20
    TIMER = 30
    SCHEDULE = 40


class _At(Event):
    """An already-triggered simpy event whose value is the callback to run (made by ``Kernel.at``)."""


def _run(event: Event) -> None:
    event._value()


_new_event = object.__new__

POLICY_LABELS = {"colocation": "co-location", "tenant_order": "tenant order"}
"""How a policy kind reads in messages (``Policy.kind`` to words)."""


def policy_label(policy: Any) -> str:
    """``scheduler 'las'``: the policy's kind and name, as error messages name it."""
    kind = getattr(policy, "kind", "policy")
    return f"{POLICY_LABELS.get(kind, kind)} {getattr(policy, 'name', '') or type(policy).__name__!r}"


def ask(policy: Any, method: Callable[..., T], args: Sequence[Any], doing: str) -> T:
    """Call a policy's ``method(*args)``: the one place a policy is called. An exception that is not
    gpusim's own becomes a ``PolicyError`` naming the policy and what it was doing (``doing`` is formatted
    with ``args`` only then, so a call costs no string work). Callers validate the answer."""
    try:
        return method(*args)
    except GpusimError:
        raise
    except Exception as exc:
        raise PolicyError(f"{policy_label(policy)} raised {exc!r} {doing.format(*args)}") from exc


class Kernel:
    """The clock (``now``) and the run loop on a ``simpy.Environment`` (``env``). Subsystems schedule callbacks
    with ``at``; ``run`` steps to the horizon."""

    __slots__ = ("_end_of_instant", "_pause_asked", "env", "event_log", "events", "exhausted", "last_change", "now",
                 "paused")

    def __init__(self, record_events: bool = False) -> None:
        self.env = simpy.Environment()
        self.now = 0.0
        """The simulated time, seconds (``env.now``, kept as an attribute by the run loop)."""
        self.event_log: list[tuple[float, str, int, tuple[int, ...]]] | None = [] if record_events else None
        self.events = 0
        self.last_change = 0.0
        """When the workload last changed (an arrival or a completion): a run without a horizon ends then."""
        self._end_of_instant: list[Callable[[], None]] = []
        self.exhausted = False
        """Whether the run ended because no event was left (rather than at the horizon)."""
        self._pause_asked = False
        self.paused = False
        """Whether the last ``run`` returned because of a ``pause()`` (the run is not over)."""

    def at(self, delay: float, order: EventOrder, callback: Callable[[], None]) -> None:
        """Call ``callback()`` ``delay`` seconds from now, in ``order`` among same-time events."""
        event = _new_event(_At)  # no __init__: the fields a triggered event needs, set here (the hottest call)
        event.env = self.env
        event.callbacks = [_run]
        event._value = callback
        event._ok = True
        self.env.schedule(event, order, delay)

    def at_time(self, time: float, callback: Callable[[], None], order: EventOrder = EventOrder.FINISH) -> None:
        """Call ``callback()`` at ``time`` (not before now), in ``order`` among same-time events: ``at`` with the
        delay ``time - now`` (the event's time is ``now + (time - now)``, which may differ from ``time`` in the
        last bit). Replicas schedule their step ends with it, without a wrapper call."""
        self.at(time - self.now, order, callback)

    def at_end_of_instant(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once every event of this instant (and those they make at it) has run, before the
        clock moves on: the place of ``EventOrder.SCHEDULE``. A callback asked for twice runs twice."""
        self._end_of_instant.append(callback)

    def pause(self) -> None:
        """Make ``run`` return once the end-of-instant calls now running are done (asked from one of them; asked
        from an event, at the end of its instant). The next ``run`` resumes where it stopped."""
        self._pause_asked = True

    def log(self, kind: str, subject: int, devices: tuple[int, ...] = ()) -> None:
        """Append to the event log (``events.csv``) when the run keeps one."""
        if self.event_log is not None:
            self.event_log.append((self.now, kind, subject, devices))

    def run(self, horizon: float, every: Callable[[], None] | None = None) -> float:
        """Step through events until none is left or the next is after ``horizon``; call ``every`` each 16,384
        events (a progress bar). Returns the end time: the horizon if events remain past it, else the last
        change; or, when a ``pause()`` stopped it (``paused``), the time it stopped at."""
        paused = gc.isenabled()
        if paused:  # see _loop
            gc.disable()
        try:
            return self._loop(horizon, every)
        finally:
            if paused:
                gc.enable()

    def _loop(self, horizon: float, every: Callable[[], None] | None) -> float:
        """``run``, with the cyclic garbage collector paused: what a run makes (job records, requests, indexes)
        lives until it ends, and each collection walks all of it again, a fifth of a 300,000-job run. The engine
        makes no garbage cycles per event; any a policy makes are collected once the run is over."""
        env = self.env
        step, peek = env.step, env.peek
        pending = self._end_of_instant
        events = 0
        while True:
            t = peek()
            if pending and t > self.now:  # the instant is over: its end-of-instant calls, which may add events
                calls = pending.copy()
                pending.clear()
                for call in calls:
                    call()
                events += len(calls)
                if self._pause_asked:  # checked once an instant, not per event
                    self._pause_asked = False
                    self.paused = True
                    self.events += events
                    return self.now
                continue
            if t > horizon or t == math.inf:
                break
            self.now = t
            step()
            events += 1
            if every is not None and not events & 0x3FFF:
                every()
        self.events += events
        self.paused = False
        self.exhausted = env.peek() == math.inf
        return self.last_change if self.exhausted else horizon
