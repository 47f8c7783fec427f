"""Actions: inject a fault, recover one or everything this run injected."""

from typing import Any, Dict, List, Optional

from chaosd.client import call

__all__ = ["inject", "recover"]

# Faults this process injected, so a rollback without an id ends exactly those.
_injected: List[str] = []


def _targets(
    cgroup: Optional[str],
    unit: Optional[str],
    pid: Optional[int],
    container: Optional[str],
    pod: Optional[str],
    host: bool,
) -> List[Any]:
    targets: List[Any] = []
    if cgroup:
        targets.append({"cgroup": cgroup})
    if unit:
        targets.append({"unit": unit})
    if pid is not None:
        targets.append({"pid": int(pid)})
    if container:
        targets.append({"container": container})
    if pod:
        targets.append({"pod": pod})
    if host:
        targets.append("host")
    return targets


def inject(
    kind: str,
    duration: str,
    params: Optional[Dict[str, Any]] = None,
    cgroup: Optional[str] = None,
    unit: Optional[str] = None,
    pid: Optional[int] = None,
    container: Optional[str] = None,
    pod: Optional[str] = None,
    host: bool = False,
    configuration: Optional[Dict[str, Any]] = None,
    secrets: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Injects a fault of ``kind`` (e.g. ``net.loss``) with ``params`` on the targets for
    ``duration`` (chaosd ends it then whatever happens); returns chaosd's fault record, whose
    ``id`` the journal keeps."""
    body = {
        "fault": {"kind": kind, "params": params or {}},
        "targets": _targets(cgroup, unit, pid, container, pod, host),
        "duration": duration,
    }
    info = call("POST", "/v1/faults", body, configuration)
    _injected.append(info["id"])
    return info


def recover(
    fault_id: Optional[str] = None,
    configuration: Optional[Dict[str, Any]] = None,
    secrets: Optional[Dict[str, Any]] = None,
) -> List[Dict[str, Any]]:
    """Recovers ``fault_id``, or, without one, every fault this run injected that is still
    active (the natural rollback). Faults that already ended are skipped."""
    ids = [fault_id] if fault_id else list(_injected)
    active = {f["id"] for f in call("GET", "/v1/faults", None, configuration)}
    ended = []
    for fid in ids:
        if fid in active:
            ended.append(call("DELETE", f"/v1/faults/{fid}", None, configuration))
        if fid in _injected:
            _injected.remove(fid)
    return ended
