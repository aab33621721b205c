"""Every Redis key the registry writes, in one place.

mesh:specialists                     set of published names
mesh:specialist:{name}:versions      sorted set of versions (score: publish time)
mesh:specialist:{name}:{version}     manifest JSON of one immutable version
mesh:installed                       hash name -> pinned version
mesh:events                          stream of registry changes (publish, install, uninstall)
"""

from __future__ import annotations

PREFIX = "mesh"
SPECIALISTS = f"{PREFIX}:specialists"
INSTALLED = f"{PREFIX}:installed"
EVENTS = f"{PREFIX}:events"
EVENTS_MAXLEN = 10_000


def versions(name: str) -> str:
    return f"{PREFIX}:specialist:{name}:versions"


def manifest(name: str, version: str) -> str:
    return f"{PREFIX}:specialist:{name}:{version}"
