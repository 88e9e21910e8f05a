"""Request workloads whose prompts share prefixes (for prefix caching): multi-turn sessions and shared system prompts.

Both return a ``RequestTrace`` with ``prefix_id`` and ``prefix_tokens`` columns (``workloads.requests``), each
attribute drawn from its own named random stream, as ``workloads.synthetic.generate_requests`` does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from workloads.arrivals import ArrivalProcess
from workloads.distributions import Distribution
from workloads.errors import WorkloadError
from workloads.requests import DEFAULT_SERVICE, RequestTrace
from workloads.synthetic import StreamSource, _key, _lengths, named_streams

#: Stream names ``generate_sessions`` draws from.
SESSION_STREAMS = ("arrivals", "turns", "think_time", "prompt_tokens", "output_tokens")
#: Stream names ``generate_system_prompt_requests`` draws from.
SYSTEM_PROMPT_STREAMS = ("arrivals", "prefixes", "prompt_tokens", "output_tokens")


def _service_column(service: str, n: int, where: str) -> np.ndarray | None:
    if not isinstance(service, str) or not service:
        raise WorkloadError(f"{_key(where, 'service')}: must be a non-empty string, got {service!r}")
    return None if service == DEFAULT_SERVICE else np.full(n, service, dtype=object)


def generate_sessions(sessions: ArrivalProcess, turns: Distribution, think_time: Distribution,
                      user_tokens: Distribution, output_tokens: Distribution, rngs: StreamSource, *,
                      count: int | None = None, horizon: float | None = None, service: str = DEFAULT_SERVICE,
                      where: str = "") -> RequestTrace:
    """Multi-turn chat sessions: each turn's prompt is the session's history so far plus the user's new tokens.

    Sessions start at the times of ``sessions`` (``rngs["arrivals"]``; ``count`` sessions and/or those before
    ``horizon``, as in ``ArrivalProcess.times``). Each has a number of turns from ``turns`` (``rngs["turns"]``,
    rounded up, at least 1). Its first turn arrives when it starts; each later turn ``think_time`` seconds after the
    one before (``rngs["think_time"]``: the gap between consecutive turns' arrivals, which covers reading the answer
    and typing; a turn may so arrive before the previous answer is done, and then reads less of it from a cache).
    Turn ``k`` brings ``user_tokens`` new tokens (``rngs["prompt_tokens"]``) and gets ``output_tokens``
    (``rngs["output_tokens"]``); its prompt is the history (every earlier turn's prompt and output, i.e. the previous
    turn's prompt plus its output) plus its new tokens, and its prefix is that history under the session's id
    (``prefix_id`` = the session's index in start order, ``prefix_tokens`` = the history; 0 on the first turn).
    Each stream is drawn for all sessions (or turns) at once, in start order, so a session's requests depend only on
    the sessions before it. Requests are sorted by arrival (ties in session order)."""
    streams = named_streams(rngs, SESSION_STREAMS)
    starts = sessions.times(streams["arrivals"], count=count, horizon=horizon)
    n_sessions = int(starts.size)
    per_session = _lengths(turns.sample(streams["turns"], n_sessions), _key(where, "turns"), n_sessions)
    total = int(per_session.sum())
    gaps = np.asarray(think_time.sample(streams["think_time"], total), dtype=np.float64)
    if gaps.shape != (total,):
        raise WorkloadError(f"{_key(where, 'think_time')}: distribution returned shape {gaps.shape}, expected "
                            f"({total},)")
    with np.errstate(invalid="ignore"):
        bad = ~(np.isfinite(gaps) & (gaps >= 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise WorkloadError(f"{_key(where, 'think_time')}: distribution produced {float(gaps[i])!r} for turn {i} "
                            f"({int(bad.sum())} of {total} bad); think times must be finite and >= 0 seconds")
    users = _lengths(user_tokens.sample(streams["prompt_tokens"], total), _key(where, "user_tokens"), total)
    outputs = _lengths(output_tokens.sample(streams["output_tokens"], total), _key(where, "output_tokens"), total)
    session = np.repeat(np.arange(n_sessions, dtype=np.int64), per_session)
    first = np.concatenate(([0], np.cumsum(per_session)[:-1])) if n_sessions else np.zeros(0, dtype=np.int64)
    turn = np.arange(total, dtype=np.int64) - np.repeat(first, per_session)  # 0 for each session's first turn
    # arrival: the session's start plus the think times of its later turns; the first turn's draw is not used
    gaps[turn == 0] = 0.0
    arrival = starts[session] + _cumsum_within(gaps, first, per_session)
    # history before turn k = sum over earlier turns of (user + output); prompt = history + user
    history = _cumsum_within((users + outputs).astype(np.int64), first, per_session) - (users + outputs)
    prompt = history + users
    order = np.argsort(arrival, kind="stable")
    return RequestTrace(arrival=arrival[order], prompt_tokens=prompt[order], output_tokens=outputs[order],
                        source="synthetic sessions", service=_service_column(service, total, where),
                        prefix_id=session[order], prefix_tokens=history[order])


def _cumsum_within(values: np.ndarray, first: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Cumulative sums of ``values`` restarting at each group (groups of ``sizes`` consecutive items from ``first``)."""
    if values.size == 0:
        return values.copy()
    running = np.cumsum(values)
    before = np.concatenate(([0], running[:-1]))[first]  # the running sum before each group
    return running - np.repeat(before, sizes)


def generate_system_prompt_requests(arrivals: ArrivalProcess, system_tokens: Sequence[int],
                                    user_tokens: Distribution, output_tokens: Distribution, rngs: StreamSource, *,
                                    weights: Sequence[float] | None = None, count: int | None = None,
                                    horizon: float | None = None, service: str = DEFAULT_SERVICE,
                                    where: str = "") -> RequestTrace:
    """Requests whose prompts start with one of ``len(system_tokens)`` shared system prompts.

    Times come from ``arrivals`` (``rngs["arrivals"]``); each request picks system prompt ``j`` with probability
    ``weights[j]`` (normalised; default uniform; ``rngs["prefixes"]``), adds ``user_tokens`` of its own
    (``rngs["prompt_tokens"]``) and gets ``output_tokens`` (``rngs["output_tokens"]``). Its prompt is
    ``system_tokens[j]`` plus its own tokens; its prefix is system prompt ``j`` (``prefix_id`` = ``j``,
    ``prefix_tokens`` = ``system_tokens[j]``)."""
    streams = named_streams(rngs, SYSTEM_PROMPT_STREAMS)
    system = np.asarray(system_tokens)
    if (system.ndim != 1 or system.size == 0 or system.dtype.kind not in "iuf"
            or not (np.isfinite(system) & (system > 0) & (system == np.floor(system))).all()):
        raise WorkloadError(f"{_key(where, 'system_tokens')}: expected a non-empty list of positive whole token "
                            f"counts, got {system_tokens!r}")
    system = system.astype(np.int64)
    k = int(system.size)
    if weights is None:
        p = np.full(k, 1.0 / k)
    else:
        p = np.asarray(weights, dtype=np.float64)
        if p.shape != (k,) or not (np.isfinite(p) & (p >= 0)).all() or not p.sum() > 0:
            raise WorkloadError(f"{_key(where, 'weights')}: expected {k} non-negative weights (one per system "
                                f"prompt) with a positive sum, got {weights!r}")
        p = p / p.sum()
    times = arrivals.times(streams["arrivals"], count=count, horizon=horizon)
    n = int(times.size)
    picks = streams["prefixes"].choice(k, size=n, p=p).astype(np.int64)
    users = _lengths(user_tokens.sample(streams["prompt_tokens"], n), _key(where, "user_tokens"), n)
    outputs = _lengths(output_tokens.sample(streams["output_tokens"], n), _key(where, "output_tokens"), n)
    shared = system[picks]
    return RequestTrace(arrival=times, prompt_tokens=shared + users, output_tokens=outputs,
                        source="synthetic system prompts", service=_service_column(service, n, where),
                        prefix_id=picks, prefix_tokens=shared)
