"""Named random streams spawned from one seed, so each source of randomness is independent."""

from __future__ import annotations

import zlib

import numpy as np

from sim.errors import ConfigError

SeedLike = int | np.random.SeedSequence | np.random.Generator | None


def as_seed_sequence(seed: SeedLike) -> np.random.SeedSequence:
    """Accept a non-negative int, a ``SeedSequence`` or a ``Generator`` (its bit generator's seed sequence); a
    negative int is a ``ConfigError``."""
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if isinstance(seed, np.random.Generator):
        seq = seed.bit_generator.seed_seq
        if not isinstance(seq, np.random.SeedSequence):
            raise TypeError("a Generator passed as seed must have been built from a SeedSequence")
        return seq
    if seed is not None and not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, SeedSequence or Generator, got {type(seed).__name__}")
    if seed is not None and seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {int(seed)}")
    return np.random.SeedSequence(seed)


class RandomStreams:
    """Independent generators keyed by name (``arrivals``, ``durations``, ``placement`` ...).

    A stream depends only on the root seed and its name, never on which other streams were drawn
    first, so changing a policy (which draws from ``placement`` or ``tie-breaks``) leaves the
    workload streams untouched: common random numbers across compared policies.
    """

    def __init__(self, seed: SeedLike = None) -> None:
        self.root = as_seed_sequence(seed)
        self._streams: dict[str, np.random.Generator] = {}

    def __getitem__(self, name: str) -> np.random.Generator:
        stream = self._streams.get(name)
        if stream is None:
            key = (*self.root.spawn_key, zlib.crc32(name.encode()))
            child = np.random.SeedSequence(self.root.entropy, spawn_key=key, pool_size=self.root.pool_size)
            stream = self._streams[name] = np.random.default_rng(child)
        return stream


def seed_label(seed: object) -> object:
    """A scalar for a results table's ``seed`` column: an int seed as is, a SeedSequence's recorded
    ``{entropy, spawn_key}`` as ``"ENTROPY/K1.K2"``."""
    if isinstance(seed, dict):
        return f"{seed['entropy']}/{'.'.join(str(k) for k in seed['spawn_key'])}"
    return seed
