"""Plug-in policies from other packages: a broken plug-in is named and breaks nothing else; a plug-in that takes a
built-in's name or declares a kind that does not exist gives a warning naming both.

Each test installs a fake distribution (``fakeplug``: a ``.dist-info`` with METADATA and entry_points.txt, and its
modules) on ``sys.path``, so ``importlib.metadata`` discovers it exactly as it would a pip-installed plug-in.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sim import registry
from sim.cli import main
from sim.errors import ConfigError
from sim.serving.contracts import Autoscaler, Colocation, Router
from sim.training.contracts import Placer, Scheduler, TenantOrder

OK_MODULE = '''
from dataclasses import dataclass

from policies.placers import FirstFit
from policies.schedulers import Fifo


@dataclass
class PlugFifo(Fifo):
    """A plug-in scheduler: FIFO under another name."""

    name = "plug-fifo"


@dataclass
class PlacerAsScheduler(FirstFit):
    """A placer that its package registers as a scheduler."""
'''

BROKEN_MODULE = '''
import cupy_is_not_installed  # noqa: F401
'''

TINY = """\
seed: 5
cluster: {preset: dgx-h100, nodes: 1}
workload:
  training:
    jobs: 20
    interarrival: {dist: exponential, mean: 60}
    duration: {dist: lognormal, median: 300, sigma: 1.0}
"""

Install = Callable[[dict[str, str]], None]


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Install]:
    """``install({"scheduler.x": "fakeplug_ok:PlugFifo"})``: the package ``fakeplug`` with these entry points."""

    def install(entry_points: dict[str, str]) -> None:
        root = tmp_path / "site"
        info = root / "fakeplug-0.1.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplug\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(
            f"[{registry.ENTRY_POINT_GROUP}]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))
        (root / "fakeplug_ok.py").write_text(OK_MODULE)
        (root / "fakeplug_broken.py").write_text(BROKEN_MODULE)
        monkeypatch.syspath_prepend(str(root))
        registry.refresh()

    yield install
    for module in ("fakeplug_ok", "fakeplug_broken"):
        sys.modules.pop(module, None)
    registry.refresh()


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def test_kinds_are_every_contract_and_every_builtin_kind() -> None:
    assert {cls.kind for cls in (Scheduler, Placer, Router, Autoscaler, Colocation, TenantOrder)} == set(registry.KINDS)
    for kind, path in registry.CONTRACTS.items():  # the contract each kind's error message names
        module, _, name = path.rpartition(".")
        assert getattr(importlib.import_module(module), name).kind == kind
    for kind in registry.KINDS:
        assert registry.available(kind), f"no built-in {kind}"
    assert registry.problems() == []  # the built-ins alone: nothing to warn about


def test_policies_lists_the_working_ones_and_a_line_per_broken_one(install: Install,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    install({"scheduler.gpu-aware": "fakeplug_broken:GpuAware",
             "scheduler.plug-fifo": "fakeplug_ok:PlugFifo",
             "scheduler.wrong-kind": "fakeplug_ok:PlacerAsScheduler"})
    assert main(["policies"]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    lines = captured.out.splitlines()
    broken = [line for line in lines if "BROKEN" in line]
    assert len(broken) == 2, captured.out
    gpu_aware = next(line for line in broken if line.split()[0] == "gpu-aware")
    for part in ("scheduler.gpu-aware", "fakeplug_broken:GpuAware", "fakeplug", "ModuleNotFoundError",
                 "cupy_is_not_installed"):
        assert part in gpu_aware, (part, gpu_aware)
    wrong_kind = next(line for line in broken if line.split()[0] == "wrong-kind")
    assert "fakeplug_ok:PlacerAsScheduler" in wrong_kind and "not a scheduler policy class" in wrong_kind
    assert "sim.Scheduler" in wrong_kind
    # everything else is listed as usual, the working plug-in too
    listed = {line.split()[0] for line in lines if line.startswith("  ") and "BROKEN" not in line
              and not line.strip().startswith("parameters:")}
    assert "plug-fifo" in listed and {"fifo", "las", "consolidate", "round-robin", "queue-length", "shared"} <= listed
    assert "2 policies cannot be loaded" in captured.err


def test_a_run_with_a_broken_plugin_names_it_and_other_runs_work(install: Install, tiny: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    install({"scheduler.gpu-aware": "fakeplug_broken:GpuAware", "scheduler.plug-fifo": "fakeplug_ok:PlugFifo"})
    assert "gpu-aware" in registry.available("scheduler")
    with pytest.raises(ConfigError, match=r"scheduler 'gpu-aware'.*fakeplug.*cupy_is_not_installed"):
        registry.create("scheduler", "gpu-aware")

    assert main(["run", str(tiny), "-o", str(tmp_path / "broken"), "--set", "policy.scheduler=gpu-aware"]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpusim: error: "), err
    for part in ("gpu-aware", "scheduler.gpu-aware = fakeplug_broken:GpuAware", "package fakeplug",
                 "ModuleNotFoundError", "cupy_is_not_installed"):
        assert part in lines[0], (part, lines[0])

    for scheduler in ("fifo", "plug-fifo"):  # the built-ins and the working plug-in are unaffected
        out = tmp_path / scheduler
        assert main(["run", str(tiny), "-o", str(out), "--set", f"policy.scheduler={scheduler}"]) == 0
        assert (out / "summary.json").is_file()


@pytest.mark.parametrize("builtin_first", [False, True])
def test_a_plugin_reusing_a_builtin_name_warns_and_the_builtin_keeps_it(
        install: Install, monkeypatch: pytest.MonkeyPatch, builtin_first: bool) -> None:
    install({"scheduler.las": "fakeplug_ok:PlugFifo"})
    if builtin_first:  # the order importlib.metadata finds the packages in must not matter
        found = registry.entry_points
        monkeypatch.setattr(registry, "entry_points", lambda group: sorted(
            found(group=group), key=lambda ep: ep.dist is None or ep.dist.name != "gpusim"))
    with pytest.warns(UserWarning) as caught:
        cls = registry.policy_class("scheduler", "las")
    assert cls.__name__ == "LeastAttainedService"
    messages = [str(w.message) for w in caught if "las" in str(w.message)]
    assert len(messages) == 1, messages
    for part in ("fakeplug", "scheduler.las = fakeplug_ok:PlugFifo", "built-in scheduler 'las'",
                 "policies.schedulers:LeastAttainedService"):
        assert part in messages[0], (part, messages[0])


def test_a_plugin_with_a_kind_that_does_not_exist_warns(install: Install,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    install({"schedular.plug-fifo": "fakeplug_ok:PlugFifo"})
    with pytest.warns(UserWarning) as caught:
        names = registry.available("scheduler")
    assert "plug-fifo" not in names and "fifo" in names
    messages = [str(w.message) for w in caught if "schedular" in str(w.message)]
    assert len(messages) == 1, messages
    for part in ("fakeplug", "schedular.plug-fifo", "'schedular'", "did you mean 'scheduler'",
                 *registry.KINDS):
        assert part in messages[0], (part, messages[0])
    # gpusim policies lists it under the plug-in problems
    assert main(["policies"]) == 0
    out = capsys.readouterr().out
    assert out.split("plug-in problems:\n", 1)[1].strip() == messages[0]


# ----------------------------------------------------------------------------- registering in code (issue 14, item 9)
@pytest.fixture
def clean_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTERED", {})


def test_a_policy_registered_in_code_is_usable_by_name(clean_registry: None) -> None:
    from dataclasses import dataclass

    from sim import Decision, Scheduler, load_config, run_config

    @registry.register
    @dataclass
    class Nothing(Scheduler):
        name = "start-nothing-then-fifo"

        def schedule(self, view):
            return Decision()

    assert "start-nothing-then-fifo" in registry.available("scheduler")
    assert registry.policy_class("scheduler", "start-nothing-then-fifo") is Nothing
    config = load_config({"cluster": {"preset": "dgx-h100", "nodes": 1}, "sim": {"progress": False},
                          "policy": {"scheduler": "start-nothing-then-fifo"},
                          "workload": {"training": {"jobs": 3}}})
    from sim.errors import StarvationError

    with pytest.raises(StarvationError):  # it really ran: it never starts anything
        run_config(config)
    assert registry.register(Nothing) is Nothing  # the same class again: fine


def test_registering_a_taken_name_names_both(clean_registry: None) -> None:
    from dataclasses import dataclass

    from sim import Decision, Scheduler
    from sim.errors import ConfigError

    @dataclass
    class Mine(Scheduler):
        name = "las"

        def schedule(self, view):
            return Decision()

    with pytest.raises(ConfigError, match=r"scheduler 'las' is already entry point scheduler\.las = .* of package "
                                          r"gpusim; register Mine under another name"):
        registry.register(Mine)
    registry.register(Mine, name="my-las")

    @dataclass
    class Other(Scheduler):
        name = "my-las"

        def schedule(self, view):
            return Decision()

    with pytest.raises(ConfigError, match=r"'my-las' is already registered as .*Mine"):
        registry.register(Other)
    with pytest.raises(ConfigError, match="expected a policy class"):
        registry.register(dict)  # type: ignore[arg-type]


def test_a_name_declared_but_not_installed_gets_a_reinstall_hint(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from sim.errors import UnknownNameError

    (tmp_path / "pyproject.toml").write_text('[project.entry-points."gpusim.policies"]\n'
                                             '"scheduler.biggest-first" = "mypkg:BiggestFirst"\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnknownNameError, match=r"declares the entry point scheduler\.biggest-first, but it is not "
                                               r"installed: reinstall the package \(pip install -e \.\)"):
        registry.policy_class("scheduler", "biggest-first")
    with pytest.raises(UnknownNameError) as info:
        registry.policy_class("scheduler", "smallest-first")
    assert "reinstall" not in str(info.value)
