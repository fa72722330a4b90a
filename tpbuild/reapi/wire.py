"""What REAPI is made of, on our side: its generated protos, SHA-256 digests, channels and errors.

Every RPC failure becomes a `ReapiError` that knows whether retrying may help (`transient`: the
server is unreachable, restarting or overloaded) and never carries a traceback to the user.
"""

from __future__ import annotations

import hashlib
import urllib.parse

try:
    import grpc
    from buildgrid.common.protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
    from buildgrid.common.protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
    from buildgrid.common.protos.google.bytestream import bytestream_pb2 as bs_pb2
    from buildgrid.common.protos.google.bytestream import bytestream_pb2_grpc as bs_grpc
    from buildgrid.common.protos.google.devtools.remoteworkers.v1test2 import bots_pb2, worker_pb2
    from buildgrid.common.protos.google.devtools.remoteworkers.v1test2 import bots_pb2_grpc as bots_grpc
    from buildgrid.common.protos.google.longrunning import operations_pb2 as ops_pb2
    from buildgrid.common.protos.google.longrunning import operations_pb2_grpc as ops_grpc
    from buildgrid.common.protos.google.rpc import code_pb2, status_pb2
except ImportError as e:  # pragma: no cover - depends on the install
    raise ImportError(f"REAPI support needs the 'reapi' extra (pip install 'tpbuild[reapi]'): {e}") from None

from ..errors import UserError
from ..remotestore import check_url

# The largest request body we send or ask for in one message; larger blobs go through ByteStream.
# Servers advertise their own limit (CacheCapabilities.max_batch_total_size_bytes), commonly 4 MiB.
MAX_BATCH = 3 << 20
CHUNK = 1 << 20
# Keep-alive and message size for long streams of large blobs.
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20),
                   ("grpc.keepalive_time_ms", 30000), ("grpc.enable_retries", 0)]

TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED,
             grpc.StatusCode.ABORTED, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
             grpc.StatusCode.CANCELLED}


# gRPC's words for a call that reached no server: nothing listens (refused), no route, no such host.
UNREACHABLE = ("failed to connect to all addresses", "DNS resolution failed")


class ReapiError(Exception):
    def __init__(self, message: str, transient: bool = True, code=None, unreachable: bool = False):
        super().__init__(message)
        self.transient = transient
        self.code = code
        self.unreachable = unreachable  # no connection could be made: see blobs.give_up


def rpc_error(what: str, e: grpc.RpcError) -> ReapiError:
    code = e.code() if hasattr(e, "code") else None
    detail = e.details() if hasattr(e, "details") else str(e)
    name = code.name if code is not None else "ERROR"
    unreachable = code == grpc.StatusCode.UNAVAILABLE and any(words in detail for words in UNREACHABLE)
    return ReapiError(f"{what}: {name}: {detail}", code in TRANSIENT, code, unreachable)


def digest_of(data: bytes) -> re_pb2.Digest:
    return re_pb2.Digest(hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


def open_channel(url: str) -> grpc.Channel:
    """grpc:// is plaintext; grpcs:// is TLS with the system's roots (GRPC_DEFAULT_SSL_ROOTS_FILE_PATH
    overrides them). A bearer token in TPBUILD_REAPI_TOKEN is sent with every call (BuildBuddy's API
    keys go in TPBUILD_REAPI_HEADERS instead: `x-buildbuddy-api-key=KEY`)."""
    problem = check_url(url)
    if problem:
        raise UserError(problem)
    u = urllib.parse.urlsplit(url)
    target = f"{u.hostname}:{u.port}" if ":" not in u.hostname else f"[{u.hostname}]:{u.port}"
    if u.scheme == "grpc":
        return grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
    return grpc.secure_channel(target, grpc.ssl_channel_credentials(), options=CHANNEL_OPTIONS)


def metadata_from_env(environ) -> tuple[tuple[str, str], ...]:
    """Call metadata: `TPBUILD_REAPI_TOKEN` as a bearer token, `TPBUILD_REAPI_HEADERS` as `k=v,k=v`."""
    md = []
    if environ.get("TPBUILD_REAPI_TOKEN"):
        md.append(("authorization", f"Bearer {environ['TPBUILD_REAPI_TOKEN']}"))
    for item in filter(None, (environ.get("TPBUILD_REAPI_HEADERS") or "").split(",")):
        k, _, v = item.partition("=")
        md.append((k.strip().lower(), v.strip()))
    return tuple(md)


__all__ = ["grpc", "re_pb2", "re_grpc", "bs_pb2", "bs_grpc", "ops_pb2", "ops_grpc", "code_pb2", "status_pb2",
           "bots_pb2", "bots_grpc", "worker_pb2",
           "ReapiError", "rpc_error", "digest_of", "open_channel", "metadata_from_env",
           "MAX_BATCH", "CHUNK"]
