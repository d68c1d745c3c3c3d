"""What every benchmark shares: the hardware label and the atomic JSON + markdown writer."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax

from fedpa_book.plotting.io import atomic_write, provenance, to_jsonable

__all__ = ["hardware", "hardware_line", "write_results"]


def hardware() -> dict:
    """What the numbers were measured on (every result carries it)."""
    return {
        **provenance(),
        "cpus_available": len(os.sched_getaffinity(0)),
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "device_count": jax.device_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def hardware_line(hw: dict) -> str:
    """One line naming the machine, for the top of a results table."""
    devices = ", ".join(sorted(set(hw.get("devices", []))))
    return (
        f"{hw['backend'].upper()} ({devices}); CPU {hw['cpu']}, {hw['cpus_available']} cores "
        f"available, load {hw['load_average_1m']:.1f}; JAX {hw['jax']}; {hw['date']}"
    )


def write_results(folder: str | os.PathLike, stem: str, result: dict, markdown: str) -> Path:
    """Writes ``<folder>/<stem>.json`` and ``<stem>.md`` atomically; returns the JSON path."""
    folder = Path(folder)
    text = json.dumps(to_jsonable(result), indent=2, sort_keys=True) + "\n"
    path = atomic_write(folder / f"{stem}.json", text)
    atomic_write(folder / f"{stem}.md", markdown)
    return path
