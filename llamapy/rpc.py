"""Distributed inference over ggml's RPC backend (client side).

Each worker machine runs an RPC server (``llamapy rpc-server`` or llama.cpp's ``rpc-server``)
that exposes its devices. :func:`add_servers` registers servers with ggml's backend
registry; their devices then appear in :func:`llamapy.backends` and a model loaded with
``rpc_servers=[...]`` places layers on them as on local GPUs.

ggml's RPC client has no error path: a server it cannot reach, or one that stops
answering, makes it abort the whole process. So llamapy never lets ggml open a
connection it has not checked first: a TCP connect with a short timeout plus the
protocol's version handshake before a server is registered, a model is loaded or memory
is queried, and before every decode a look at the connection ggml already holds (a
server that went away has closed it). A model whose server went away is never freed
(freeing would talk to the dead server and abort); its memory stays allocated until the
process ends. What Python cannot guard: a server dying *during* a decode (ggml aborts the
process) and a server that vanishes without closing its connections (power loss, a
network cut), where ggml waits forever.

The protocol has no authentication or encryption: expose a server only on a trusted
network.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import select
import socket
import stat
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from ._ffi import ffi, lib
from .errors import LlamaError

logger = logging.getLogger("llamapy")

DEFAULT_PORT = 50052
PROTOCOL_VERSION = (lib.RPC_PROTO_MAJOR_VERSION, lib.RPC_PROTO_MINOR_VERSION, lib.RPC_PROTO_PATCH_VERSION)
CHECK_TIMEOUT_S = 5.0

# Wire details of ggml-rpc that its public header does not declare: the command numbers
# of the handshake and of the device count, and the size of the transport capabilities
# that both handshake messages carry.
_CMD_HELLO = 14
_CMD_DEVICE_COUNT = 15
_CONN_CAPS_SIZE = 24


class RPCError(LlamaError, ConnectionError):
    """An RPC server could not be reached, speaks another protocol version, or went away."""

    def __init__(self, message: str, endpoint: str | None = None):
        super().__init__(message)
        self.endpoint = endpoint


@dataclass(frozen=True)
class ServerInfo:
    """What a reachable RPC server reported."""

    endpoint: str
    version: tuple[int, int, int] | None  # None: checked through the connection this process holds
    n_devices: int | None


# -- endpoints ------------------------------------------------------------------------------
def split_endpoint(endpoint: str) -> tuple[str, int]:
    """``"host:port"`` (``"[v6]:port"`` too) -> (host, port); ValueError names a bad one."""
    text = str(endpoint).strip()
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"RPC server {endpoint!r}: expected HOST:PORT (e.g. 127.0.0.1:{DEFAULT_PORT})")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"RPC server {endpoint!r}: port {port} is out of range")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


def normalize_endpoint(endpoint: str) -> str:
    """The one spelling of an endpoint used as ggml's key (``host:port``)."""
    host, port = split_endpoint(endpoint)
    return f"{host}:{port}"


def parse_servers(spec: str | Iterable[str] | None) -> list[str]:
    """A comma-separated list (the CLI's ``--rpc``) or a sequence -> normalized endpoints."""
    if spec is None:
        return []
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out = [normalize_endpoint(s) for s in items if str(s).strip()]
    if len(set(out)) != len(out):
        raise ValueError(f"RPC servers listed twice: {', '.join(out)}")
    return out


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_addr_cache: dict[tuple[str, int], frozenset[tuple[str, int]]] = {}


def _addresses(host: str, port: int) -> frozenset[tuple[str, int]]:
    key = (host, port)
    if key not in _addr_cache:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror:
            infos = []
        _addr_cache[key] = frozenset((info[4][0], info[4][1]) for info in infos)
    return _addr_cache[key]


# -- the connection ggml holds ------------------------------------------------------------
# endpoint -> (descriptor, inode, address family) of ggml's connection, found once by a scan
_held: dict[str, tuple[int, int, int]] = {}


def _peer_of(fd: int) -> tuple[tuple[str, int], int] | None:
    """(peer address, family) of a connected TCP socket descriptor; None for anything else."""
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            return None
        s = socket.socket(fileno=os.dup(fd))
    except OSError:
        return None
    with s:
        try:
            if s.type != socket.SOCK_STREAM or s.family not in (socket.AF_INET, socket.AF_INET6):
                return None
            peer = s.getpeername()
        except OSError:
            return None
        return (peer[0], peer[1]), s.family


_RDHUP = getattr(select, "POLLRDHUP", 0)  # Linux: the peer closed its side


def _alive(fd: int, family: int) -> bool:
    """Whether the peer of a held connection is still there (it closes it when it stops).

    Nothing is read and the descriptor is not touched: on Linux a zero-timeout poll for
    "peer hung up"; elsewhere a non-blocking peek through a socket object that only borrows
    the descriptor (skipped when a default socket timeout is set, as such an object would
    then switch the descriptor to non-blocking under ggml's feet).
    """
    if _RDHUP:
        poller = select.poll()
        poller.register(fd, select.POLLIN | _RDHUP)
        return not any(ev & (_RDHUP | select.POLLHUP | select.POLLERR | select.POLLNVAL)
                       for _, ev in poller.poll(0))
    if socket.getdefaulttimeout() is not None:
        return True
    s = socket.socket(family, socket.SOCK_STREAM, 0, fileno=fd)
    try:
        return s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except (BlockingIOError, InterruptedError):
        return True
    except OSError:
        return False
    finally:
        s.detach()


def _held_state(endpoint: str) -> bool | None:
    """Whether this process's connection to ``endpoint`` (ggml's) is alive; None without one.

    The descriptor is found once by a scan of this process's sockets and then recognised by
    its inode, so the check before each decode costs two system calls.
    """
    cached = _held.get(endpoint)
    if cached is not None:
        fd, ino, family = cached
        try:
            same = os.fstat(fd).st_ino == ino
        except OSError:
            same = False
        if same:
            return _alive(fd, family)
        del _held[endpoint]
    addrs = _addresses(*split_endpoint(endpoint))
    try:
        names = os.listdir("/dev/fd")
    except OSError:
        return None
    for name in names:
        found = _peer_of(int(name)) if name.isdigit() else None
        if found is not None and found[0] in addrs:
            fd = int(name)
            try:
                _held[endpoint] = (fd, os.fstat(fd).st_ino, found[1])
            except OSError:
                continue
            return _alive(fd, found[1])
    return None


# -- checking a server ----------------------------------------------------------------------
def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionResetError("the server closed the connection")
        data += chunk
    return data


def _request(sock: socket.socket, cmd: int, payload: bytes, reply_size: int) -> bytes:
    sock.sendall(struct.pack("<BQ", cmd, len(payload)) + payload)
    size = struct.unpack("<Q", _recv_exact(sock, 8))[0]
    if size != reply_size:
        raise ValueError(f"unexpected reply size {size} (expected {reply_size})")
    return _recv_exact(sock, size)


def check_server(endpoint: str, timeout: float = CHECK_TIMEOUT_S) -> ServerInfo:
    """Check that an RPC server is reachable and speaks this build's protocol version.

    If this process already holds a connection to it (a loaded model), that connection
    is checked instead (a server serves one client at a time, so a second connection
    would wait). Raises :class:`RPCError` naming the endpoint within about ``timeout``
    seconds: connection refused, no answer, not an RPC server or busy with another
    client, or another protocol version.
    """
    ep = normalize_endpoint(endpoint)
    held = _held_state(ep)
    if held is not None:
        if not held:
            raise RPCError(f"RPC server {ep} went away (it closed the connection this process holds); "
                           f"ggml cannot reconnect, so restart the server and then this program", ep)
        return ServerInfo(ep, None, None)
    host, port = split_endpoint(ep)
    t0 = time.monotonic()
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except socket.timeout:
        raise RPCError(f"RPC server {ep} did not answer within {timeout:g} s (wrong address, "
                       f"or a firewall drops the connection)", ep) from None
    except OSError as e:
        reason = e.strerror or str(e)
        raise RPCError(f"cannot reach RPC server {ep}: {reason} (is `llamapy rpc-server` running "
                       f"there, on that port?)", ep) from None
    with sock:
        sock.settimeout(max(0.5, timeout - (time.monotonic() - t0)))
        try:
            hello = _request(sock, _CMD_HELLO, bytes(_CONN_CAPS_SIZE), 4 + _CONN_CAPS_SIZE)
            major, minor, patch = hello[0], hello[1], hello[2]
            if major != PROTOCOL_VERSION[0] or minor > PROTOCOL_VERSION[1]:
                raise RPCError(f"RPC server {ep} speaks protocol {major}.{minor}.{patch}; this llamapy "
                               f"speaks {'.'.join(map(str, PROTOCOL_VERSION))} (run the same llama.cpp "
                               f"version on both sides)", ep)
            count = struct.unpack("<I", _request(sock, _CMD_DEVICE_COUNT, b"", 4))[0]
        except socket.timeout:
            raise RPCError(f"RPC server {ep} accepted the connection but did not answer the handshake "
                           f"within {timeout:g} s: it is busy with another client (an RPC server serves "
                           f"one client at a time) or it is not a ggml RPC server", ep) from None
        except (OSError, ValueError) as e:
            raise RPCError(f"RPC server {ep} failed the handshake ({e}): not a ggml RPC server, or "
                           f"another protocol version", ep) from None
    return ServerInfo(ep, (major, minor, patch), count)


def is_alive(endpoint: str, timeout: float = CHECK_TIMEOUT_S) -> bool:
    """:func:`check_server` as a bool."""
    try:
        check_server(endpoint, timeout)
    except RPCError:
        return False
    return True


def check_servers(endpoints: Sequence[str], timeout: float = CHECK_TIMEOUT_S) -> list[ServerInfo]:
    """Check several servers; the error names every one that failed."""
    infos, errors = [], []
    for ep in endpoints:
        try:
            infos.append(check_server(ep, timeout))
        except RPCError as e:
            errors.append(e)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise RPCError("; ".join(str(e) for e in errors), errors[0].endpoint)
    return infos


def ensure_alive(endpoints: Sequence[str]) -> None:
    """The check before each decode: the connections ggml holds to these (normalized)
    endpoints are still open; an endpoint without one gets the full :func:`check_server`."""
    for ep in endpoints:
        held = _held_state(ep)
        if held is None or not held:
            check_server(ep)


# -- registering servers ----------------------------------------------------------------------
_registered: dict[str, Any] = {}
_lock = threading.Lock()


def registered_servers() -> list[str]:
    """The endpoints registered in this process, in order."""
    return list(_registered)


def add_server(endpoint: str, timeout: float = CHECK_TIMEOUT_S) -> list[str]:
    """Check and register one server (once per process); returns its device names."""
    return _register(check_server(endpoint, timeout))


def add_servers(endpoints: str | Iterable[str], timeout: float = CHECK_TIMEOUT_S) -> list[str]:
    """Check and register servers (``"h1:p,h2:p"`` or a list); returns their device names in order."""
    infos = check_servers(parse_servers(endpoints), timeout)  # every failure named before any registration
    return [name for info in infos for name in _register(info)]


def _register(info: ServerInfo) -> list[str]:
    if not lib.llama_supports_rpc():
        raise RPCError("this build of llama.cpp has no RPC backend (rebuild with LLAMAPY_BACKENDS=cpu,rpc)")
    ep = info.endpoint
    with _lock:
        reg = _registered.get(ep)
        if reg is None:
            if len(_registered) >= lib.GGML_RPC_MAX_SERVERS:
                raise RPCError(f"at most {lib.GGML_RPC_MAX_SERVERS} RPC servers per process", ep)
            if info.n_devices == 0:
                raise RPCError(f"RPC server {ep} exposes no devices", ep)
            reg = lib.ggml_backend_rpc_add_server(ep.encode())
            if reg == ffi.NULL:
                raise RPCError(f"RPC server {ep} could not be registered (it reported no devices)", ep)
            lib.ggml_backend_register(reg)
            _registered[ep] = reg
    return [ffi.string(lib.ggml_backend_dev_name(lib.ggml_backend_reg_dev_get(reg, i))).decode()
            for i in range(lib.ggml_backend_reg_dev_count(reg))]


# -- devices ---------------------------------------------------------------------------------
def device_endpoint(dev: Any) -> str | None:
    """The endpoint of an RPC device (ggml describes each by its server), None for a local one."""
    reg = lib.ggml_backend_dev_backend_reg(dev)
    if reg == ffi.NULL or ffi.string(lib.ggml_backend_reg_name(reg)) != b"RPC":
        return None
    return ffi.string(lib.ggml_backend_dev_description(dev)).decode()


def local_offload_devices() -> list[str]:
    """The local devices llama.cpp offloads to by default (GPUs; integrated GPUs only
    without a discrete one), leaving out registered RPC servers."""
    gpus: list[str] = []
    igpus: list[str] = []
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        if device_endpoint(dev) is not None:
            continue
        kind = lib.ggml_backend_dev_type(dev)
        name = ffi.string(lib.ggml_backend_dev_name(dev)).decode()
        if kind == lib.GGML_BACKEND_DEVICE_TYPE_GPU:
            gpus.append(name)
        elif kind == lib.GGML_BACKEND_DEVICE_TYPE_IGPU:
            igpus.append(name)
    return gpus or igpus


def live_offload_devices() -> list[str]:
    """The devices a load may use now: those of registered servers still reachable, then the
    local ones (ggml aborts when a load touches a device whose server went away)."""
    remote = []
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        endpoint = device_endpoint(dev)
        if endpoint is not None and _still_there(endpoint):
            remote.append(ffi.string(lib.ggml_backend_dev_name(dev)).decode())
    return remote + local_offload_devices()


def endpoints_of(device_names: Sequence[str]) -> list[str]:
    """The servers behind the RPC devices among ``device_names``, in order, once each."""
    out: list[str] = []
    for name in device_names:
        dev = lib.ggml_backend_dev_by_name(name.encode())
        ep = device_endpoint(dev) if dev != ffi.NULL else None
        if ep is not None and ep not in out:
            out.append(ep)
    return out


def guarded_free(free: Callable[[Any], None], endpoints: Sequence[str], what: str) -> Callable[[Any], None]:
    """``free`` that leaks instead when a server went away (ggml would abort talking to it)."""
    eps = tuple(endpoints)

    def run(ptr: Any) -> None:
        try:
            gone = [ep for ep in eps if not _still_there(ep)]
        except Exception:  # interpreter shutdown: sockets may be gone; leaking is the safe side
            return
        if gone:
            logger.warning("not freeing a %s: RPC server %s went away and ggml would abort the process "
                           "talking to it; its memory is released when the process ends", what, ", ".join(gone))
            return
        free(ptr)

    return run


def _still_there(endpoint: str) -> bool:
    held = _held_state(endpoint)
    return held if held is not None else is_alive(endpoint, timeout=2.0)


# -- serving -----------------------------------------------------------------------------------
def server_devices_for(names: Sequence[str] | None) -> list[Any]:
    """ggml devices to serve: the named ones, else the local accelerators, else the CPU."""
    available = {}
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        if device_endpoint(dev) is None:
            available[ffi.string(lib.ggml_backend_dev_name(dev)).decode()] = dev
    if names:
        unknown = [n for n in names if n not in available and lib.ggml_backend_dev_by_name(n.encode()) == ffi.NULL]
        if unknown:
            raise ValueError(f"unknown device {', '.join(unknown)}; available: {', '.join(available)}")
        return [available.get(n) or lib.ggml_backend_dev_by_name(n.encode()) for n in names]
    accel = [d for d in available.values() if lib.ggml_backend_dev_type(d) != lib.GGML_BACKEND_DEVICE_TYPE_CPU]
    cpu = [d for d in available.values() if lib.ggml_backend_dev_type(d) == lib.GGML_BACKEND_DEVICE_TYPE_CPU]
    return accel or cpu[:1]


def serve(host: str = "127.0.0.1", port: int = DEFAULT_PORT, devices: Sequence[str] | None = None,
          n_threads: int | None = None, cache_dir: str | os.PathLike | None = None,
          allow_public: bool = False, on_ready: Callable[[str, list[str]], None] | None = None) -> int:
    """Run an RPC server in this process until SIGTERM or Ctrl-C; returns an exit status.

    ggml's server loop never returns, so it runs in a daemon thread while the main thread
    waits for the signal and then ends the process at once (``os._exit``): there is nothing
    to save, and its clients see their connection close. Listening on anything but
    loopback needs ``allow_public=True``: the protocol has no authentication, and whoever
    reaches the port can run computations and read or write memory on this machine.
    """
    import signal

    if not is_loopback(host) and not allow_public:
        raise PermissionError(f"refusing to listen on {host}: ggml's RPC protocol has no authentication or "
                              f"encryption, so anyone who can reach the port can use this machine; listen on "
                              f"127.0.0.1, or pass allow_public=True (--allow-public) on a trusted network only")
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range")
    devs = server_devices_for(devices)
    n_threads = n_threads or max(1, (os.cpu_count() or 2) // 2)
    endpoint = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    _check_bindable(host, port)
    cache = None
    if cache_dir is not None:
        os.makedirs(cache_dir, exist_ok=True)
        cache = ffi.new("char[]", os.fsencode(cache_dir))
    arr = ffi.new("ggml_backend_dev_t[]", devs)
    ep = ffi.new("char[]", f"{host}:{port}".encode())
    stop = threading.Event()
    thread = threading.Thread(target=lib.ggml_backend_rpc_start_server,
                              args=(ep, cache if cache is not None else ffi.NULL, n_threads, len(devs), arr),
                              name="rpc-server", daemon=True)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    thread.start()
    deadline = time.monotonic() + 30
    ready = False
    while not ready and thread.is_alive() and not stop.is_set() and time.monotonic() < deadline:
        try:
            check_server(endpoint, timeout=5.0)
            ready = True
        except RPCError:
            stop.wait(0.05)
    names = [ffi.string(lib.ggml_backend_dev_name(d)).decode() for d in devs]
    if ready and on_ready is not None:
        on_ready(endpoint, names)
    elif thread.is_alive() and not stop.is_set():
        logger.warning("rpc-server on %s does not answer its own handshake", endpoint)
    while thread.is_alive() and not stop.is_set():
        stop.wait(0.5)
    return 0 if stop.is_set() else 1


def _check_bindable(host: str, port: int) -> None:
    """A clear error for a port in use or an address not on this machine (ggml only prints)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ValueError(f"cannot resolve {host}: {e}") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            raise OSError(e.errno, f"cannot listen on {host}:{port}: {e.strerror}") from None
