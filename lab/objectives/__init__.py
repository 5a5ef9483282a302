"""Registry of training objectives: one line per objective."""
from __future__ import annotations

import importlib

from lab.errors import LabError

# name -> "module:Class". Imported lazily so a broken objective cannot break the others.
REGISTRY: dict[str, str] = {
    "ntp": "lab.objectives.ntp:NTP",
    "quiet-star": "lab.objectives.quiet_star:QuietSTaR",
    "rlp": "lab.objectives.rlp:RLP",
    "rpt": "lab.objectives.rpt:RPT",
}


def available() -> list[str]:
    out = []
    for name in REGISTRY:
        try:
            get_objective(name)
            out.append(name)
        except LabError:
            pass
    return out


def get_objective(name: str):
    if name not in REGISTRY:
        raise LabError(f"Unknown objective {name!r}; choose one of {', '.join(REGISTRY)}.")
    module, cls = REGISTRY[name].split(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as e:
        raise LabError(f"Objective {name!r} is not available in this build ({e}).") from e
