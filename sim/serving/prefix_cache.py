"""Prefix caching in a replica's KV cache (vLLM's automatic prefix caching, SGLang's RadixAttention), by prefix id.

A request may say that its prompt starts with the first ``prefix_tokens`` tokens of a shared token sequence
named ``prefix_id`` (a session's history, a system prompt: ``workloads.requests``). A replica with prefix caching
keeps, per prefix id, one cached run of that sequence's first tokens (an *entry* of ``tokens`` tokens, a multiple
of ``block_tokens``). A request admitted to the batch reads ``min(entry, prefix_tokens, prompt - 1)`` tokens
(whole blocks; at least one prompt token is computed, for its logits) from the entry instead of prefilling them:
a partial hit when the entry is shorter than its prefix. The request *publishes* what it computed: when its prefill
completes, its prefix (the entry grows to ``prefix_tokens``), and when it finishes, its whole context (prompt and
output: the next turn of a session continues it). An entry keeps the longest run published under its id.

Capacity. Cached tokens share the replica's KV cache with running requests without ever taking space from them:
a running request holds its own tokens plus, *pinned*, the entry tokens it reads (counted once however many
requests read them); an entry's tokens beyond its longest reader, and whole entries nobody reads, are *evictable*.
Running requests may use all the space that is not held (``capacity - held``): whenever they need more, evictable
tokens go, from the tail of the least recently used entry first (``lru``: an entry is used when a request reads,
publishes or releases it; ``fifo``: only when it is created), whole blocks at a time. A pinned token is never
evicted.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from sim.errors import ConfigError, did_you_mean

EVICTION_POLICIES = ("lru", "fifo")
"""Which evictable cached tokens go first: the least recently used entry's (``lru``) or the oldest entry's."""


@dataclass(frozen=True)
class PrefixCacheConfig:
    """Prefix caching of a continuously batching service (``ContinuousBatching(prefix_cache=...)``).

    ``eviction``: ``lru`` (default) or ``fifo``. ``block_tokens``: the KV cache's block size; only whole blocks
    are cached and read (vLLM's default is 16; 1 caches every token, as SGLang's radix tree does)."""

    eviction: str = "lru"
    block_tokens: int = 16

    def __post_init__(self) -> None:
        if self.eviction not in EVICTION_POLICIES:
            raise ConfigError(f"prefix_cache.eviction: unknown eviction policy {self.eviction!r}"
                              f"{did_you_mean(str(self.eviction), EVICTION_POLICIES)}; valid: "
                              f"{', '.join(EVICTION_POLICIES)}")
        if isinstance(self.block_tokens, bool) or not isinstance(self.block_tokens, int) or self.block_tokens < 1:
            raise ConfigError(f"prefix_cache.block_tokens: must be a positive integer, got {self.block_tokens!r}")

    @classmethod
    def of(cls, value: Any) -> PrefixCacheConfig | None:
        """The config ``value`` means: True (the defaults), a mapping of fields, a config, or None/False (off)."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            known = [f.name for f in fields(cls)]
            for key in value:
                if key not in known:
                    raise ConfigError(f"prefix_cache.{key}: unknown key{did_you_mean(str(key), known)}; valid: "
                                      f"{', '.join(known)}")
            return cls(**value)
        raise ConfigError(f"prefix_cache: expected true, false, a PrefixCacheConfig or {{eviction: lru, "
                          f"block_tokens: 16}}, got {value!r}")


class _Entry:
    """One prefix id's cached tokens and the readers pinning them (tokens read -> how many readers)."""

    __slots__ = ("pinned", "readers", "tokens")

    def __init__(self) -> None:
        self.tokens = 0
        self.pinned = 0  # the longest reader's tokens: held, never evicted
        self.readers: dict[int, int] = {}


class PrefixCache:
    """The cached prefixes of one replica. The replica owns the count of *held* KV tokens; every method that
    changes what is pinned returns the change in held tokens, which the replica adds to its count. ``evictable``
    is the number of cached tokens not pinned; ``shrink(free)`` evicts until it is at most ``free``."""

    def __init__(self, config: PrefixCacheConfig) -> None:
        self.block = config.block_tokens
        self.lru = config.eviction == "lru"
        self.entries: OrderedDict[int, _Entry] = OrderedDict()  # least recently used (or oldest) first
        self.evictable = 0
        # counters for the replica's report
        self.lookups = 0  # admissions of requests with a prefix of at least one token
        self.hits = 0  # of which read at least one cached block
        self.saved = 0  # prompt tokens read from the cache instead of prefilled
        self.evicted = 0  # cached tokens evicted

    def tokens(self, prefix_id: int) -> int:
        """Cached tokens of prefix ``prefix_id`` (0 if none)."""
        entry = self.entries.get(prefix_id)
        return 0 if entry is None else entry.tokens

    def _touch(self, prefix_id: int) -> None:
        if self.lru:
            self.entries.move_to_end(prefix_id)

    def match(self, prefix_id: int, prefix_tokens: int, prompt: int) -> tuple[int, int]:
        """``(tokens, held)``: the cached tokens a request with this prefix and ``prompt`` tokens to prefill would
        read (whole blocks, leaving at least one token to compute), and the tokens reading them would newly pin."""
        entry = self.entries.get(prefix_id)
        if entry is None or prefix_tokens <= 0:
            return 0, 0
        usable = min(prefix_tokens, prompt - 1)
        tokens = min(entry.tokens, usable - usable % self.block)
        return tokens, max(0, tokens - entry.pinned)

    def pin(self, prefix_id: int, tokens: int) -> int:
        """A request reads ``tokens`` (> 0) of the entry; returns the change in held tokens."""
        entry = self.entries[prefix_id]
        entry.readers[tokens] = entry.readers.get(tokens, 0) + 1
        self._touch(prefix_id)
        return self._set_pinned(entry, max(entry.pinned, tokens))

    def unpin(self, prefix_id: int, tokens: int) -> int:
        """A request stops reading its ``tokens`` (> 0) of the entry; returns the change in held tokens (<= 0)."""
        entry = self.entries[prefix_id]
        left = entry.readers[tokens] - 1
        if left:
            entry.readers[tokens] = left
        else:
            del entry.readers[tokens]
        self._touch(prefix_id)
        return self._set_pinned(entry, max(entry.readers, default=0))

    def _set_pinned(self, entry: _Entry, pinned: int) -> int:
        change = pinned - entry.pinned
        entry.pinned = pinned
        self.evictable -= change
        return change

    def publish(self, prefix_id: int, reading: int, tokens: int) -> tuple[int, int]:
        """A request that reads ``reading`` tokens of the entry (0: none) has computed the first ``tokens`` tokens
        of the sequence (rounded down to whole blocks here). If that is longer than the entry, its tokens become the
        entry's and it reads (pins) all of them; the entry's old tokens past ``reading`` are dropped. Returns
        ``(reading, held)``: what the request now reads, and the change in held tokens counted on the entry's side
        (the request's own tokens that became the entry's are the caller's to subtract)."""
        tokens -= tokens % self.block
        entry = self.entries.get(prefix_id)
        if entry is None:
            if tokens <= 0:
                return reading, 0
            entry = self.entries[prefix_id] = _Entry()
        self._touch(prefix_id)
        if tokens <= entry.tokens:
            return reading, 0
        held = self.unpin(prefix_id, reading) if reading else 0
        self.evictable -= entry.tokens - entry.pinned  # its old tail is replaced by the request's tokens
        held += tokens - entry.pinned  # nobody else reads past the old length: the request is the longest reader
        entry.tokens = entry.pinned = tokens
        entry.readers[tokens] = entry.readers.get(tokens, 0) + 1
        return tokens, held

    def shrink(self, free: int) -> None:
        """Evict until at most ``free`` tokens are evictable: least recently used (or oldest) entries' unpinned
        tails first, whole blocks at a time."""
        excess = self.evictable - free
        if excess <= 0:
            return
        block = self.block
        gone = []
        for prefix_id, entry in self.entries.items():
            tail = entry.tokens - entry.pinned
            if tail <= 0:
                continue
            take = min(tail, -(-excess // block) * block)
            entry.tokens -= take
            self.evictable -= take
            self.evicted += take
            excess -= take
            if entry.tokens == 0:
                gone.append(prefix_id)
            if excess <= 0:
                break
        for prefix_id in gone:
            del self.entries[prefix_id]
