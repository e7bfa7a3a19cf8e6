"""Nothing of ours sends anything off the machine.

OpenVINO's Python package sends usage telemetry (a DNS query and HTTPS to an analytics host) from
any process that imports it, unless the user opted out in a file in their home folder or a CI
variable is set. Its own code treats a missing ``openvino_telemetry`` module as "no telemetry" (it
then uses a local stub), so marking that module as absent in ``sys.modules`` switches telemetry off
at the source, in this process and without touching the user's files. Both packages call
``block_telemetry()`` on import, before anything can import openvino; a process that imported
``openvino_telemetry`` before ours keeps it (we cannot undo an import), which
``telemetry_blocked()`` reports.
"""

from __future__ import annotations

import sys

TELEMETRY_MODULES = ("openvino_telemetry",)


def block_telemetry() -> None:
    """Make ``import openvino_telemetry`` fail with ImportError in this process (idempotent)."""
    for name in TELEMETRY_MODULES:
        sys.modules.setdefault(name, None)  # None in sys.modules: the import system raises ImportError


def telemetry_blocked() -> bool:
    """True when no telemetry module can load in this process."""
    return all(sys.modules.get(name, False) is None for name in TELEMETRY_MODULES)
