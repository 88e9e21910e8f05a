"""Network contention: hand-computed max-min cases, incremental updates, bad input, and invariants (hypothesis)."""

from __future__ import annotations

import math
from collections.abc import Hashable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.errors import ConfigError
from sim.platform.network.contention import ContentionSolver, UpdateStats

GB = 1e9
TOL = 1e-9
FAIRNESS = ("bandwidth", "rate")
PROPERTY_SETTINGS = settings(max_examples=200, deadline=None, database=None,
                             suppress_health_check=[HealthCheck.too_slow])

JobSpec = tuple[Hashable, tuple[int, ...], tuple[float, ...], float]


def solved(capacity: list[float], jobs: list[JobSpec], fairness: str = "bandwidth") -> dict[Hashable, float]:
    solver = ContentionSolver(np.array(capacity), fairness=fairness)  # type: ignore[arg-type]
    for job_id, links, demands, weight in jobs:
        solver.add(job_id, links, demands, weight)
    solver.update()
    return solver.rates()


def classic() -> ContentionSolver:
    """Three links, four jobs, 10 B/s on every link each crosses (worked out in test_classic_three_links)."""
    solver = ContentionSolver(np.array([12.0, 6.0, 15.0]))
    solver.add("A", [0, 1], 10.0, 1.0)
    solver.add("B", [0], 10.0, 1.0)
    solver.add("C", [1, 2], 10.0, 1.0)
    solver.add("D", [2], 10.0, 1.0)
    solver.update()
    return solver


# ----------------------------------------------------------------------------- hand-computed cases


@pytest.mark.parametrize("fairness", FAIRNESS)
def test_two_equal_jobs_share_one_link_equally(fairness: str) -> None:
    rates = solved([100 * GB], [("a", (0,), (100 * GB,), 1.0), ("b", (0,), (100 * GB,), 1.0)], fairness)
    assert rates == pytest.approx({"a": 0.5, "b": 0.5}, rel=1e-12)


@pytest.mark.parametrize("fairness", FAIRNESS)
def test_weights_two_to_one_split_the_link_two_to_one(fairness: str) -> None:
    rates = solved([100 * GB], [("a", (0,), (100 * GB,), 0.6), ("b", (0,), (100 * GB,), 0.3)], fairness)
    assert rates == pytest.approx({"a": 2 / 3, "b": 1 / 3}, rel=1e-12)


@pytest.mark.parametrize("fairness", FAIRNESS)
def test_classic_three_links(fairness: str) -> None:
    # Links 0, 1, 2 carry 12, 6 and 15 B/s; every job pushes 10 B/s on each of its links.
    # A: {0, 1}, B: {0}, C: {1, 2}, D: {2}. Filling: link 1 (A + C) saturates first at 3 B/s each, so A and C
    # freeze at x = 0.3. B then takes what A leaves on link 0: 12 - 3 = 9 B/s, x = 0.9. D would get
    # 15 - 3 = 12 B/s on link 2, more than its 10 B/s, so it runs uncontended and link 2 keeps 2 B/s spare.
    solver = classic() if fairness == "bandwidth" else None
    rates = solver.rates() if solver else solved(
        [12.0, 6.0, 15.0], [("A", (0, 1), (10.0, 10.0), 1.0), ("B", (0,), (10.0,), 1.0),
                            ("C", (1, 2), (10.0, 10.0), 1.0), ("D", (2,), (10.0,), 1.0)], fairness)
    assert rates == pytest.approx({"A": 0.3, "B": 0.9, "C": 0.3, "D": 1.0}, rel=1e-12)
    if solver:
        assert solver.link_load() == pytest.approx([12.0, 6.0, 13.0], rel=1e-12)


def test_fairness_modes_differ_on_unequal_demands() -> None:
    # One 100 B/s link, A wants 100 and B 10. Bandwidth fairness: B's 10 is below its 50 share, so B keeps
    # x = 1 and A gets the remaining 90 (x = 0.9). Rate fairness: both slowed alike, 110 x = 100.
    jobs: list[JobSpec] = [("A", (0,), (100.0,), 1.0), ("B", (0,), (10.0,), 1.0)]
    assert solved([100.0], jobs, "bandwidth") == pytest.approx({"A": 0.9, "B": 1.0}, rel=1e-12)
    assert solved([100.0], jobs, "rate") == pytest.approx({"A": 100 / 110, "B": 100 / 110}, rel=1e-12)


def test_bandwidth_fairness_ignores_demand_on_uncontended_links() -> None:
    # j also pushes 100 B/s over link 1, which has room for it: only its 10 B/s on the contended link 0
    # counts, so j and k split link 0 evenly.
    jobs: list[JobSpec] = [("j", (0, 1), (10.0, 100.0), 1.0), ("k", (0,), (10.0,), 1.0)]
    assert solved([10.0, 1000.0], jobs) == pytest.approx({"j": 0.5, "k": 0.5}, rel=1e-12)


def test_job_alone_above_capacity_gets_capacity_over_demand() -> None:
    assert solved([40.0, 100.0], [("a", (0, 1), (80.0, 50.0), 1.0)]) == pytest.approx({"a": 0.5}, rel=1e-12)


def test_uncontended_and_linkless_jobs_run_at_full_rate() -> None:
    jobs: list[JobSpec] = [("a", (0,), (40.0,), 1.0), ("b", (0,), (60.0,), 1.0), ("c", (), (), 1.0)]
    assert solved([100.0], jobs) == {"a": 1.0, "b": 1.0, "c": 1.0}


def test_removal_restores_rates() -> None:
    solver = classic()
    before = solver.rates()
    solver.remove("C")
    # Without C, link 1 carries only A: A and B split link 0 (0.6 each); D, alone on link 2, keeps 1.0.
    assert solver.update() == pytest.approx({"A": 0.6, "B": 0.6}, rel=1e-12)
    assert solver.rates() == pytest.approx({"A": 0.6, "B": 0.6, "D": 1.0}, rel=1e-12)
    solver.add("C", [1, 2], 10.0, 1.0)
    solver.update()
    assert solver.rates() == before


def test_update_returns_only_changed_jobs() -> None:
    solver = ContentionSolver(np.array([12.0, 6.0, 15.0, 50.0]))
    for job_id, links in (("A", [0, 1]), ("B", [0]), ("C", [1, 2])):
        solver.add(job_id, links, 10.0, 1.0)
    assert solver.update() == pytest.approx({"A": 0.3, "B": 0.9, "C": 0.3}, rel=1e-12)
    assert solver.update() == {}
    assert solver.last_update == UpdateStats()
    # D makes link 2 contended and joins A, B, C's component, which is re-solved, but C stays bottlenecked
    # on link 1: only the new job is reported.
    solver.add("D", [2], 10.0, 1.0)
    assert solver.pending
    assert solver.update() == {"D": 1.0}
    assert solver.last_update == UpdateStats(components=1, jobs=4, links=3)
    # A job on a link nobody else uses: only itself is solved and reported.
    solver.add("E", [3], 60.0, 1.0)
    assert "E" not in solver.rates()
    assert solver.update() == pytest.approx({"E": 50 / 60}, rel=1e-12)
    assert solver.last_update == UpdateStats(components=1, jobs=1, links=1)
    # Removing B re-solves its component; A gets link 0 to itself but stays bottlenecked on link 1.
    solver.remove("B")
    assert solver.update() == {}
    assert solver.rates() == pytest.approx({"A": 0.3, "C": 0.3, "D": 1.0, "E": 50 / 60}, rel=1e-12)


@pytest.mark.parametrize("fairness", FAIRNESS)
def test_incremental_matches_from_scratch_bit_for_bit(fairness: str) -> None:
    # Larger than the hypothesis cases: many jobs freeze together, and sums are long.
    rng = np.random.default_rng(3)
    capacity = rng.uniform(50, 150, size=12)
    solver = ContentionSolver(capacity, fairness=fairness)  # type: ignore[arg-type]
    alive: dict[int, JobSpec] = {}
    for step in range(300):
        if alive and rng.random() < 0.4:
            solver.remove(alive.pop(int(rng.choice(list(alive))))[0])
        else:
            links = rng.choice(12, size=int(rng.integers(1, 5)), replace=False)
            demands = rng.choice([5.0, 10.0, 20.0, 40.0], size=len(links))
            alive[step] = (step, tuple(links.tolist()), tuple(demands.tolist()), float(rng.choice([0.25, 0.5, 1])))
            solver.add(*alive[step])
        if rng.random() < 0.5:
            solver.update()
            assert solver.rates() == solver.solve_all()
    solver.update()
    assert len(alive) > 30 and sum(rate < 1 for rate in solver.rates().values()) > 10
    check_invariants(capacity.tolist(), list(alive.values()), solver.rates(), fairness)


def test_weights_far_apart_keep_full_precision() -> None:
    # A (weight 1e9) freezes at x = 0.1 on link 1 almost at once; B (weight 1e-3) then fills what A leaves on
    # link 0: (3 - 0.5) / 5 = 0.5. Link 0's growth sum cancels from 5e9 + 5e-3 down to 5e-3 on the way.
    jobs: list[JobSpec] = [("A", (0, 1), (5.0, 10.0), 1e9), ("B", (0,), (5.0,), 1e-3)]
    assert solved([3.0, 1.0], jobs, "rate") == pytest.approx({"A": 0.1, "B": 0.5}, rel=1e-12)


def test_mixed_job_id_types() -> None:
    rates = solved([10.0], [(1, (0,), (10.0,), 1.0), ("1", (0,), (10.0,), 1.0), ((2, 3), (0,), (10.0,), 2.0)])
    assert rates == pytest.approx({1: 0.25, "1": 0.25, (2, 3): 0.5}, rel=1e-12)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("capacity", "words"), [
    ([1.0, 0.0], ["link 1", "capacity"]),
    ([-5.0], ["link 0"]),
    ([1.0, 2.0, math.nan], ["link 2"]),
    ([math.inf], ["link 0"]),
    ([[1.0]], ["one-dimensional"]),
])
def test_bad_capacity(capacity: list, words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        ContentionSolver(np.array(capacity))
    assert all(word in str(info.value) for word in words), info.value


@pytest.mark.parametrize(("links", "demands", "weight", "words"), [
    ([0, 7], 1.0, 1.0, ["'job-x'", "unknown link 7"]),
    ([-1], 1.0, 1.0, ["'job-x'", "unknown link -1"]),
    ([0, 1.5], 1.0, 1.0, ["'job-x'", "1.5", "not an integer"]),
    ([0, 1, 0], 1.0, 1.0, ["'job-x'", "link 0", "twice"]),
    ([0, 1], [1.0, 0.0], 1.0, ["'job-x'", "link 1", "demand"]),
    ([0, 1], [-2.0, 1.0], 1.0, ["'job-x'", "link 0", "demand"]),
    ([0, 1], [1.0, math.nan], 1.0, ["'job-x'", "link 1", "nan"]),
    ([2], math.inf, 1.0, ["'job-x'", "link 2", "inf"]),
    ([0, 1], [1.0], 1.0, ["'job-x'", "1 demands for 2 links"]),
    ([0], 1.0, 0.0, ["'job-x'", "weight"]),
    ([0], 1.0, -1.0, ["'job-x'", "weight"]),
    ([0], 1.0, math.nan, ["'job-x'", "weight"]),
    ([0], "fast", 1.0, ["'job-x'", "link 0", "demand"]),
])
def test_bad_job(links: list, demands: object, weight: float, words: list[str]) -> None:
    solver = ContentionSolver(np.ones(3))
    with pytest.raises(ConfigError) as info:
        solver.add("job-x", links, demands, weight)  # type: ignore[arg-type]
    assert all(word in str(info.value) for word in words), info.value
    assert "job-x" not in solver and not solver.pending


def test_duplicate_and_unknown_job_ids() -> None:
    solver = ContentionSolver(np.ones(2))
    solver.add("a", [0], 1.0, 1.0)
    with pytest.raises(ConfigError, match="job 'a' is already registered"):
        solver.add("a", [1], 1.0, 1.0)
    with pytest.raises(KeyError, match="job 'b' is not registered"):
        solver.remove("b")
    with pytest.raises(ConfigError, match="fairness"):
        ContentionSolver(np.ones(2), fairness="fifo")  # type: ignore[arg-type]


def test_capacity_is_copied_and_read_only() -> None:
    capacity = np.array([10.0])
    solver = ContentionSolver(capacity)
    capacity[0] = 1.0
    assert solver.link_capacity[0] == 10.0
    with pytest.raises(ValueError):
        solver.link_capacity[0] = 5.0


# ----------------------------------------------------------------------------- invariants (hypothesis)


@st.composite
def instances(draw: st.DrawFn, max_links: int = 6, max_jobs: int = 9) -> tuple[list[float], list[JobSpec]]:
    """Random capacities and jobs; demands and capacities on a coarse grid so that ties are frequent."""
    n_links = draw(st.integers(1, max_links))
    capacity = [draw(st.integers(1, 40)) * 2.5 for _ in range(n_links)]
    jobs: list[JobSpec] = []
    for job_id in range(draw(st.integers(1, max_jobs))):
        links = tuple(sorted(draw(st.sets(st.integers(0, n_links - 1), max_size=n_links))))
        demands = tuple(draw(st.integers(1, 40)) * 1.25 for _ in links)
        weight = draw(st.sampled_from([0.1, 0.25, 0.5, 1.0, 3.0]))
        jobs.append((job_id, links, demands, weight))
    return capacity, jobs


def check_invariants(capacity: list[float], jobs: list[JobSpec], rates: dict[Hashable, float], fairness: str) -> None:
    assert set(rates) == {job[0] for job in jobs}
    load = [0.0] * len(capacity)
    demand_sum = [0.0] * len(capacity)
    for job_id, links, demands, _ in jobs:
        assert 0 < rates[job_id] <= 1  # (a) never above the uncontended rate
        for link, demand in zip(links, demands, strict=True):
            load[link] += rates[job_id] * demand
            demand_sum[link] += demand
    for link, cap in enumerate(capacity):  # (b) no link above its capacity
        assert load[link] <= cap * (1 + TOL)
    saturated = [load[link] >= cap * (1 - TOL) for link, cap in enumerate(capacity)]
    contended = [demand_sum[link] > cap for link, cap in enumerate(capacity)]
    level: dict[Hashable, float] = {}
    for job_id, links, demands, weight in jobs:
        scale = max((d for link, d in zip(links, demands, strict=True) if contended[link]), default=1.0)
        level[job_id] = rates[job_id] * (scale if fairness == "bandwidth" else 1.0) / weight
    for job_id, links, _, _ in jobs:
        if rates[job_id] == 1:
            continue
        # (d) Pareto: a slowed job crosses a saturated link; fairness: on one of them nobody has a higher level.
        assert any(saturated[link] for link in links), job_id
        assert any(saturated[link] and all(level[other] <= level[job_id] * (1 + TOL)
                                           for other, other_links, _, _ in jobs if link in other_links)
                   for link in links), job_id


@PROPERTY_SETTINGS
@given(instance=instances(), fairness=st.sampled_from(FAIRNESS), data=st.data())
def test_invariants_and_insertion_order(instance: tuple[list[float], list[JobSpec]], fairness: str,
                                        data: st.DataObject) -> None:
    capacity, jobs = instance
    rates = solved(capacity, jobs, fairness)
    check_invariants(capacity, jobs, rates, fairness)
    shuffled = data.draw(st.permutations(jobs))
    assert solved(capacity, shuffled, fairness) == rates  # (f) bit for bit, whatever the order


@PROPERTY_SETTINGS
@given(left=instances(max_links=4, max_jobs=6), right=instances(max_links=4, max_jobs=6),
       fairness=st.sampled_from(FAIRNESS))
def test_jobs_on_disjoint_links_do_not_affect_each_other(left: tuple[list[float], list[JobSpec]],
                                                         right: tuple[list[float], list[JobSpec]],
                                                         fairness: str) -> None:
    # (c) The right group lives on links shifted past the left group's, with its own job ids.
    (left_cap, left_jobs), (right_cap, right_jobs) = left, right
    shift = len(left_cap)
    moved = [(("r", job_id), tuple(link + shift for link in links), demands, weight)
             for job_id, links, demands, weight in right_jobs]
    solver = ContentionSolver(np.array(left_cap + right_cap), fairness=fairness)  # type: ignore[arg-type]
    for job in left_jobs:
        solver.add(*job)
    solver.update()
    alone = solver.rates()
    for job in moved:
        solver.add(*job)
    changed = solver.update()
    assert set(changed) == {job[0] for job in moved}  # no left job is even reported
    assert {job_id: solver.rate(job_id) for job_id in alone} == alone
    for job in moved[: len(moved) // 2]:
        solver.remove(job[0])
    assert not set(solver.update()) & set(alone)
    assert {job_id: solver.rate(job_id) for job_id in alone} == alone
    assert alone == solved(left_cap, left_jobs, fairness)


@PROPERTY_SETTINGS
@given(instance=instances(max_jobs=12), fairness=st.sampled_from(FAIRNESS), data=st.data())
def test_incremental_updates_report_exactly_the_changes(instance: tuple[list[float], list[JobSpec]], fairness: str,
                                                        data: st.DataObject) -> None:
    capacity, jobs = instance
    solver = ContentionSolver(np.array(capacity), fairness=fairness)  # type: ignore[arg-type]
    mirror: dict[Hashable, float] = {}  # what an engine applying the reported changes believes
    alive: dict[Hashable, JobSpec] = {}
    for job in jobs:
        solver.add(*job)
        alive[job[0]] = job
        if alive and data.draw(st.booleans()):
            victim = data.draw(st.sampled_from(sorted(alive)))
            solver.remove(victim)
            del alive[victim]
            mirror.pop(victim, None)
        if data.draw(st.booleans()):
            before = solver.rates()
            changed = solver.update()
            after = solver.rates()
            assert {job_id for job_id in after if before.get(job_id) != after[job_id]} <= set(changed)
            assert all(after[job_id] == rate for job_id, rate in changed.items())
            mirror.update(changed)
            assert mirror == after == solver.solve_all()
            check_invariants(capacity, list(alive.values()), after, fairness)
            # link loads kept incrementally equal the loads summed afresh
            np.testing.assert_allclose(solver.link_load(), solver.link_load_exact(), rtol=1e-9,
                                       atol=1e-9 * float(np.max(capacity)))
    solver.update()
    assert solver.rates() == solved(capacity, list(alive.values()), fairness)


# ----------------------------------------------------------------------------- capacity changes (link failures)


def test_set_capacity_re_solves_the_link_and_restores_on_repair() -> None:
    solver = classic()
    before = solver.rates()
    solver.set_capacity(1, 3.0)  # link 1 (A and C) halves: A and C get 1.5 each, and B all it asks of link 0
    changed = solver.update()
    assert solver.rates() == solved([12.0, 3.0, 15.0], [("A", (0, 1), (10.0, 10.0), 1.0), ("B", (0,), (10.0,), 1.0),
                                                        ("C", (1, 2), (10.0, 10.0), 1.0), ("D", (2,), (10.0,), 1.0)])
    assert solver.rate("A") == pytest.approx(0.15) and solver.rate("C") == pytest.approx(0.15)
    assert solver.rate("B") == 1.0 and set(changed) == {"A", "B", "C"}  # D was at 1.0 already
    assert solver.link_capacity[1] == 3.0 and not solver.link_capacity.flags.writeable
    solver.set_capacity(1, 6.0)
    solver.update()
    assert solver.rates() == before


def test_set_capacity_on_an_uncontended_link_changes_nothing() -> None:
    solver = classic()
    before = solver.rates()
    solver.set_capacity(0, 100.0)  # link 0 no longer contended: A is held by link 1, B runs free
    solver.update()
    assert solver.rate("B") == 1.0 and solver.rates() == solver.solve_all()
    solver.set_capacity(0, 12.0)
    solver.update()
    assert solver.rates() == before


@pytest.mark.parametrize("link, capacity, words", [
    (7, 1.0, ["unknown link 7"]), ("x", 1.0, ["not an integer"]), (0, 0.0, ["link 0", "positive and finite"]),
    (0, math.inf, ["positive and finite"]), (0, -2.0, ["positive and finite"])])
def test_set_capacity_bad_input(link: object, capacity: float, words: list[str]) -> None:
    solver = classic()
    with pytest.raises(ConfigError) as info:
        solver.set_capacity(link, capacity)  # type: ignore[arg-type]
    assert all(word in str(info.value) for word in words)
    assert solver.link_capacity.tolist() == [12.0, 6.0, 15.0]


@PROPERTY_SETTINGS
@given(instance=instances(max_jobs=12), fairness=st.sampled_from(FAIRNESS), data=st.data())
def test_capacity_changes_incremental_match_from_scratch(instance: tuple[list[float], list[JobSpec]], fairness: str,
                                                         data: st.DataObject) -> None:
    # links lose and regain capacity between adds and removes: the incremental rates stay those of a fresh solver
    # on the current capacities, bit for bit, and every job whose rate changed is reported
    capacity, jobs = instance
    current = list(capacity)
    solver = ContentionSolver(np.array(capacity), fairness=fairness)  # type: ignore[arg-type]
    alive: dict[Hashable, JobSpec] = {}
    mirror: dict[Hashable, float] = {}
    for job in jobs:
        solver.add(*job)
        alive[job[0]] = job
        for _ in range(data.draw(st.integers(0, 2))):
            link = data.draw(st.integers(0, len(capacity) - 1))
            current[link] = capacity[link] * data.draw(st.sampled_from([0.25, 0.5, 0.75, 1.0]))
            solver.set_capacity(link, current[link])
        if data.draw(st.booleans()):
            before = solver.rates()
            changed = solver.update()
            after = solver.rates()
            assert {job_id for job_id in after if before.get(job_id) != after[job_id]} <= set(changed)
            mirror.update(changed)
            assert mirror == after == solver.solve_all() == solved(current, list(alive.values()), fairness)
            check_invariants(current, list(alive.values()), after, fairness)
    solver.update()
    assert solver.rates() == solved(current, list(alive.values()), fairness)
