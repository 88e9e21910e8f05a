"""Write the columnar copies of the bundled traces again: ``python -m workloads.traces.rebuild``.

Run it after changing a bundled trace file; ``tests/test_columnar_copy.py`` fails until the copies match their
sources. See ``workloads.traces.columnar``.
"""

from __future__ import annotations

from workloads.traces.philly import write_philly_copy


def main() -> None:
    for path in (write_philly_copy(),):
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
