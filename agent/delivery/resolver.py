"""Name resolution bounded by the connect timeout, under httpx.

``socket.getaddrinfo`` has no timeout of its own: a resolver that never
answers (a DNS server behind a firewall that drops its packets, a hung NSS
module) would hold a send outside every httpx timeout. :class:`BoundedBackend`
is the httpcore network backend of the client's connections: it looks the
host up in a daemon thread, waits for it no longer than the connect timeout,
then connects to the addresses in turn. Only the TCP connect sees an address:
httpcore still starts TLS with the host *name* (SNI, certificate checks).

A lookup still running when its wait ends is not started again by the next
connection, which waits for the same one; its answer, once in, is kept
:data:`TTL` seconds (a lookup slower than the connect timeout then still
serves the next attempt), and dropped when no address of it connects.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from typing import Any

import httpcore
import httpx

__all__ = ["LookupTimeout", "Resolver", "BoundedBackend", "bounded_transport"]

TTL = 300.0


class LookupTimeout(httpcore.ConnectTimeout):
    """The host's name was not resolved within the connect timeout."""


class _Lookup:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.infos: list[Any] | None = None
        self.error: OSError | None = None
        self.at = 0.0


class Resolver:
    def __init__(self, ttl: float = TTL) -> None:
        self._ttl = ttl
        self._lock = threading.Lock()
        self._lookups: dict[tuple[str, int], _Lookup] = {}

    def _run(self, key: tuple[str, int], lookup: _Lookup) -> None:
        try:
            lookup.infos = socket.getaddrinfo(key[0], key[1], type=socket.SOCK_STREAM)
        except OSError as exc:
            lookup.error = exc
        except Exception as exc:  # noqa: BLE001 - e.g. UnicodeError of an odd name: a lookup failure
            lookup.error = OSError(f"{type(exc).__name__}: {exc}")
        lookup.at = time.monotonic()
        if lookup.error is not None:
            with self._lock:  # a failure is not kept: the next connection asks again
                if self._lookups.get(key) is lookup:
                    del self._lookups[key]
        lookup.done.set()

    def resolve(self, host: str, port: int, timeout: float | None) -> list[Any]:
        """getaddrinfo's answer for ``host``; raises :class:`LookupTimeout`
        after ``timeout`` seconds, httpcore.ConnectError when it fails."""
        key = (host, port)
        with self._lock:
            lookup = self._lookups.get(key)
            if lookup is not None and lookup.done.is_set() and time.monotonic() - lookup.at > self._ttl:
                lookup = None
            if lookup is None:
                lookup = self._lookups[key] = _Lookup()
                threading.Thread(target=self._run, args=(key, lookup), name="agent-dns", daemon=True).start()
        if not lookup.done.wait(timeout):
            raise LookupTimeout(f"looking up {host} timed out after {timeout:g} s")
        if lookup.error is not None or not lookup.infos:
            raise httpcore.ConnectError(str(lookup.error or f"no address for {host}"))
        return lookup.infos

    def forget(self, host: str, port: int) -> None:
        with self._lock:
            lookup = self._lookups.get((host, port))
            if lookup is not None and lookup.done.is_set():
                del self._lookups[(host, port)]


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class BoundedBackend(httpcore.SyncBackend):
    def __init__(self, resolver: Resolver | None = None) -> None:
        self.resolver = resolver or Resolver()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None, socket_options: Any = None) -> httpcore.NetworkStream:
        if _is_address(host):
            return super().connect_tcp(host, port, timeout, local_address, socket_options)
        last: Exception | None = None
        for info in self.resolver.resolve(host, port, timeout):
            try:
                return super().connect_tcp(info[4][0], port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        self.resolver.forget(host, port)
        raise last if last is not None else httpcore.ConnectError(f"no address for {host}")


def bounded_transport(ssl_context: Any, resolver: Resolver | None = None) -> httpx.HTTPTransport:
    """httpx's own transport (its limits, exception mapping) over :class:`BoundedBackend`."""
    transport = httpx.HTTPTransport(verify=ssl_context)
    # httpx exposes no network backend option: its pool is rebuilt with ours,
    # with httpx's default limits
    transport._pool = httpcore.ConnectionPool(
        ssl_context=ssl_context, max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0,
        network_backend=BoundedBackend(resolver),
    )
    return transport
