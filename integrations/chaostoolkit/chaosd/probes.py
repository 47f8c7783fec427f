"""Probes: whether a fault is in force, and the faults chaosd lists."""

from typing import Any, Dict, List, Optional

from chaosd.client import call

__all__ = ["fault_active", "list_faults"]


def list_faults(
    include_ended: bool = False,
    configuration: Optional[Dict[str, Any]] = None,
    secrets: Optional[Dict[str, Any]] = None,
) -> List[Dict[str, Any]]:
    """The faults chaosd has in force (and, with ``include_ended``, those recently ended)."""
    path = "/v1/faults?all=true" if include_ended else "/v1/faults"
    return call("GET", path, None, configuration)


def fault_active(
    fault_id: Optional[str] = None,
    kind: Optional[str] = None,
    configuration: Optional[Dict[str, Any]] = None,
    secrets: Optional[Dict[str, Any]] = None,
) -> bool:
    """True while a fault is in force: ``fault_id`` itself, any fault of ``kind``, or, with
    neither, any fault at all."""
    for f in list_faults(False, configuration):
        if fault_id and f["id"] != fault_id:
            continue
        if kind and f["kind"] != kind:
            continue
        return True
    return False
