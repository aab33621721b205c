"""Every Redis key the registry writes, in one place.

mesh:specialists                      set of published names
mesh:specialist:{name}:versions       sorted set of versions (score: publish time)
mesh:specialist:{name}:{version}      manifest JSON of one immutable version
mesh:specialist:{name}:meta           hash: owner, created_at, deprecated:{version|*},
                                      yanked:{version}
mesh:installed                        hash name -> JSON {"pin": "latest"|version, "version"}
mesh:tokens                           hash sha256(token) -> owner
mesh:stats:{name}                     hash of usage counters (routed, pinned, errors, ...)
mesh:stats:{name}:latency             list of recent latencies in ms (newest first, capped)
mesh:response:{id}                    specialist that produced a response (for feedback)
mesh:response:{id}:rating             the response's latest rating ("up"|"down"): one counted
                                      rating per response; same TTL as mesh:response:{id}
mesh:events                           stream of registry changes
mesh:router:artifacts                 sorted set of router artifact versions (score: save time)
mesh:router:artifact:{version}        JSON of one immutable router artifact record
mesh:router:current                   the router artifact version the router serves
mesh:router:lessons                   hash lesson id -> JSON: labelled queries from traffic
mesh:router:lessons:version           counter: changes of the accepted lessons
mesh:router:lessons:pending           set of the pending lesson ids (the cap counts them)
mesh:response:{id}:query              the routed query of a response (a thumbs-up proposes it
                                      as a lesson); same TTL as mesh:response:{id}
mesh:artifact:{id}                    canonical JSON index of one uploaded artifact bundle
                                      {"files": {name: {"sha256", "size"}}}; id = sha256 of it
mesh:blob:{sha256}                    bytes of one file of an artifact (binary client)
"""

from __future__ import annotations

PREFIX = "mesh"
SPECIALISTS = f"{PREFIX}:specialists"
INSTALLED = f"{PREFIX}:installed"
TOKENS = f"{PREFIX}:tokens"
EVENTS = f"{PREFIX}:events"
ROUTER_ARTIFACTS = f"{PREFIX}:router:artifacts"
ROUTER_CURRENT = f"{PREFIX}:router:current"
ROUTER_LESSONS = f"{PREFIX}:router:lessons"
ROUTER_LESSONS_VERSION = f"{PREFIX}:router:lessons:version"
ROUTER_LESSONS_PENDING = f"{PREFIX}:router:lessons:pending"
EVENTS_MAXLEN = 10_000
LATENCY_SAMPLES = 1_000
RESPONSE_TTL_S = 7 * 24 * 3600


def versions(name: str) -> str:
    return f"{PREFIX}:specialist:{name}:versions"


def manifest(name: str, version: str) -> str:
    return f"{PREFIX}:specialist:{name}:{version}"


def meta(name: str) -> str:
    return f"{PREFIX}:specialist:{name}:meta"


def stats(name: str) -> str:
    return f"{PREFIX}:stats:{name}"


def latency(name: str) -> str:
    return f"{PREFIX}:stats:{name}:latency"


def response(response_id: str) -> str:
    return f"{PREFIX}:response:{response_id}"


def rating(response_id: str) -> str:
    """The one rating a response counts with (a second rating replaces it)."""
    return f"{PREFIX}:response:{response_id}:rating"


def response_query(response_id: str) -> str:
    """The routed query behind a response, kept so that a thumbs-up can teach the router."""
    return f"{PREFIX}:response:{response_id}:query"


def router_artifact(version: str) -> str:
    return f"{PREFIX}:router:artifact:{version}"


def artifact(artifact_id: str) -> str:
    return f"{PREFIX}:artifact:{artifact_id}"


def blob(sha256: str) -> str:
    return f"{PREFIX}:blob:{sha256}"


def all_for(name: str) -> list[str]:
    """Keys holding one specialist's non-version data (versions are listed separately)."""
    return [versions(name), meta(name), stats(name), latency(name)]
