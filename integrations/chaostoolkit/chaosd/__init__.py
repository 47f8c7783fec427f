"""Chaos Toolkit extension for chaosd.

Actions and probes talk to chaosd's API through its Unix socket on this host (configuration
key ``chaosd_socket``, default ``/run/chaosd/chaosd.sock``), or to another host's chaosd over
its remote listener with mutual TLS (``chaosd_url``, ``chaosd_ca``, ``chaosd_cert``,
``chaosd_key``; see ``chaosd.client``).
"""

from typing import List

__version__ = "0.1.0"
__all__ = ["__version__", "discover"]


def discover(discover_system: bool = True):
    """What this extension offers, for ``chaos discover chaostoolkit-chaosd``."""
    from chaoslib.discovery.discover import (
        discover_actions,
        discover_probes,
        initialize_discovery_result,
    )

    discovery = initialize_discovery_result("chaostoolkit-chaosd", __version__, "chaosd")
    activities: List = []
    activities.extend(discover_actions("chaosd.actions"))
    activities.extend(discover_probes("chaosd.probes"))
    discovery["activities"].extend(activities)
    return discovery
