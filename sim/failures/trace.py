"""A failure trace: outages read from a CSV file and replayed as they are listed.

The file has a header and one outage a line: ``time`` (seconds from the start of the run), ``node``, ``device`` or
``link`` (the index of a node, the global index of a device, or a shared link of the network by id or by the name
``Topology.link_name`` gives it, e.g. ``leaf-up leaf 1``: give one of them on each line; a file may have several of
these columns, the others left empty) and ``duration`` (seconds until it is back). Optional ``kind`` labels the
outage (default ``trace``, ``link`` for a link). A link outage is one physical link of the bundle failing, both
directions (``sim.failures.links``). Every fault is a ``ConfigError`` naming the file, the line and the field.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from sim.errors import ConfigError
from sim.failures.link_topology import link_node, parse_link
from sim.platform.cluster import Cluster


@dataclass(frozen=True)
class FailureRecord:
    """One outage of a trace: at ``time``, the ``devices`` (all of a node's, or one) go out for ``duration``
    seconds; ``node`` is their node and ``kind`` a label."""

    time: float
    node: int
    devices: tuple[int, ...]
    duration: float
    kind: str = "trace"
    link: int = -1
    """A link outage: the shared link id named (``node`` -1 and no ``devices`` for a leaf or pod link)."""
    where: str = ""
    """The file and line it came from."""


def _number(text: str, where: str, field: str, *, positive: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{where}: {field} {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ConfigError(f"{where}: {field} {text!r} must be a finite number {'> 0' if positive else '>= 0'}")
    return value


def _index(text: str, where: str, field: str, count: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{where}: {field} {text!r} is not an integer index") from None
    if not 0 <= value < count:
        raise ConfigError(f"{where}: {field} {value} is not a {what} of the cluster (it has {count}: 0 to "
                          f"{count - 1})")
    return value


def load_failure_trace(path: str | Path, cluster: Cluster) -> list[FailureRecord]:
    """The outages listed in the CSV file ``path`` for ``cluster``, in time order (stable)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"failures.trace: cannot read {str(path)!r}: {exc.strerror or exc}") from None
    rows = csv.DictReader(text.splitlines())
    header = [name.strip() for name in rows.fieldnames or ()]
    missing = [name for name in ("time", "duration") if name not in header]
    if missing or not ({"node", "device", "link"} & set(header)):
        raise ConfigError(f"{path}:1: the header needs time, node, device or link, and duration; got "
                          f"{', '.join(header)}")
    rows.fieldnames = header
    out = []
    for line, row in enumerate(rows, start=2):
        where = f"{path}:{line}"
        time = _number((row.get("time") or "").strip(), where, "time", positive=False)
        duration = _number((row.get("duration") or "").strip(), where, "duration", positive=True)
        node_text, device_text = (row.get("node") or "").strip(), (row.get("device") or "").strip()
        link_text = (row.get("link") or "").strip()
        if bool(node_text) + bool(device_text) + bool(link_text) != 1:
            raise ConfigError(f"{where}: give one of node, device or link, got node={node_text!r} "
                              f"device={device_text!r} link={link_text!r}")
        if link_text:
            link = parse_link(link_text, cluster.topology, f"{where}: link")
            node, devices = link_node(cluster, link)
            kind = (row.get("kind") or "").strip() or "link"
            out.append(FailureRecord(time, node, devices, duration, kind, link, where))
            continue
        if node_text:
            node = _index(node_text, where, "node", cluster.num_nodes, "node")
            devices = tuple(cluster.devices_of_node(node))
        else:
            device = _index(device_text, where, "device", cluster.num_devices, "device")
            node, devices = cluster.device_node[device], (device,)
        kind = (row.get("kind") or "").strip() or "trace"
        out.append(FailureRecord(time, node, devices, duration, kind, where=where))
    out.sort(key=lambda r: r.time)
    return out
