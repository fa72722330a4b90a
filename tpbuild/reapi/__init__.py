"""tpbuild as a client of the Remote Execution API (build.bazel.remote.execution.v2, "REAPI").

Bazel, Buck2, Pants, BuildStream and recc speak it; Buildbarn, BuildBuddy, NativeLink, EngFlow and
BuildGrid serve it. tpbuild uses it two ways, both as runners the scheduler does not know about:
- a remote cache (`--remote-cache grpc://HOST:PORT`): the REAPI ActionCache and CAS, looked up
  before a run action runs and written after it ran locally (`cache.py`);
- a remote executor (`--remote-executor grpc://HOST:PORT`): run actions are shipped as REAPI
  Actions and their results fetched back (`execution.py`), through the same ActionCache, so a build
  executed remotely is a cache hit for a build that only reads the cache.

Modules: `wire` (protos, digests, channels, errors), `blobs` (CAS and ActionCache transfers into and
out of the local blob store), `merkle` (input roots and output trees), `command` (a run action as a
REAPI Command and Action), `cache`, `execution`, and `worker` (a Remote Workers API bot for clusters
that lack one). The protos come from `buildgrid-common` (the `reapi` extra); nothing here is
imported by a build that does not use REAPI.
"""
