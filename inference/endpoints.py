"""Where the server may send a request: the one rule for model endpoints (eval runs, judges).

    url = check_endpoint_url("http://gpu-1:8000/v1", allowed_hosts=["gpu-1"])   # ValueError if not
    answer = post(url + "/chat/completions", body, headers, allowed_hosts=[...], timeout=120)
    answer.status, answer.body

An endpoint URL is typed by a project admin, but the request leaves from the server, inside its
network: left alone it reaches the cloud metadata service (169.254.169.254), Redis on
127.0.0.1:6379 or any internal service, and the page shows their answer. So:

- http or https only, and no ``user:password@`` in the URL (a key goes in the API key field);
- link-local, cloud-metadata, multicast, reserved and unspecified addresses are always refused;
- loopback and private addresses (anything not globally routable) only for a host listed in
  ``allowed_hosts`` (settings.MODEL_ENDPOINT_ALLOWED_HOSTS): a name, an address or a network
  such as ``10.0.0.0/8``;
- a host written as a number in another form (``0``, ``2130706433``, ``0x7f.1``) is refused: an
  address is written as a dotted quad or in IPv6 brackets;
- the host is resolved and *every* address it resolves to is checked; ``post`` resolves and
  checks again when it connects and then connects to a checked address (no second lookup a
  hostile DNS server could answer differently), and never follows a redirect.

Standard library only.
"""

from __future__ import annotations

import http.client
import ipaddress
import re
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata services (the rest of 169.254.0.0/16 and fe80::/10 is refused as link-local).
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, ... (link-local too)
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure WireServer
        "192.0.0.192",  # Oracle Cloud
    )
)
THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")  # "this host": 0.x.x.x reaches the server itself
NAT64 = ipaddress.ip_network("64:ff9b::/96")
MAX_BODY_BYTES = 64 * 1024 * 1024


class EndpointRefused(ValueError):
    """The URL may not be called from the server; the message says why."""


@dataclass(frozen=True)
class Answer:
    status: int
    reason: str
    body: bytes


def check_endpoint_url(url: str, allowed_hosts: Iterable[str] = ()) -> str:
    """The URL, stripped, when the server may call it; EndpointRefused (a ValueError) otherwise."""
    url = (url or "").strip()
    _scheme, host, port = _split(url)
    try:
        resolve_checked(host, port, allowed_hosts)
    except socket.gaierror as exc:
        raise EndpointRefused(f"cannot resolve the host {host!r} from the server ({exc.strerror})") from None
    return url


def resolve_checked(host: str, port: int, allowed_hosts: Iterable[str] = ()) -> list[tuple]:
    """getaddrinfo() of host:port for TCP, after checking every address: EndpointRefused if any is
    refused, socket.gaierror (an OSError: worth a retry) if the name does not resolve."""
    names, networks = _allowed(allowed_hosts)
    _check_host_form(host)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except UnicodeError as exc:
        raise EndpointRefused(f"the host {host!r} is not a valid name ({exc})") from None
    if not infos:
        raise EndpointRefused(f"the host {host!r} resolves to no address")
    for info in infos:
        ip = info[4][0]
        problem = _refusal(_address(ip), host in names, networks)
        if problem:
            where = f"{host} is" if ip == host else f"the host {host!r} resolves to {ip},"
            raise EndpointRefused(f"{where} {problem}")
    return infos


def post(
    url: str, data: bytes, headers: dict, *, allowed_hosts: Iterable[str] = (), timeout: float = 120.0
) -> Answer:
    """POST to a checked address of the URL's host. A 3xx comes back as an Answer, never followed.
    EndpointRefused when the URL may not be called; OSError when it cannot be reached."""
    scheme, host, port = _split(url)
    parts = urlsplit(url.strip())
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    cls = _CheckedHTTPSConnection if scheme == "https" else _CheckedHTTPConnection
    conn = cls(host, port, allowed_hosts=tuple(allowed_hosts), timeout=timeout)
    try:
        conn.request("POST", target, body=data, headers=headers)
        resp = conn.getresponse()
        body = resp.read(MAX_BODY_BYTES + 1)
        if len(body) > MAX_BODY_BYTES:
            raise OSError(f"the answer is larger than {MAX_BODY_BYTES // 2**20} MiB")
        return Answer(resp.status, resp.reason or "", body)
    except http.client.HTTPException as exc:
        raise OSError(f"bad HTTP answer: {type(exc).__name__}") from None
    finally:
        conn.close()


def excerpt(text: str, limit: int = 200) -> str:
    """A remote answer as safe, short text: control characters dropped, whitespace folded, cut at limit."""
    text = re.sub(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]", "", str(text))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit].rstrip() + "…"


# ------------------------------------------------------------------------------ internals


def _split(url: str) -> tuple[str, str, int]:
    try:
        parts = urlsplit((url or "").strip())
        port = parts.port
    except ValueError as exc:
        raise EndpointRefused(f"{excerpt(url, 100)!r} is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise EndpointRefused(f"{excerpt(url, 100)!r}: only http:// and https:// URLs can be an endpoint")
    if "@" in parts.netloc:
        raise EndpointRefused("the URL must not hold a user name or password; give the key as the API key")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise EndpointRefused(f"{excerpt(url, 100)!r} has no host")
    return parts.scheme, host, port or (443 if parts.scheme == "https" else 80)


def _check_host_form(host: str) -> None:
    """A host whose last label is a number is an IPv4 address (URL standard): only a plain dotted quad,
    not "0", "2130706433", "127.1" or "0x7f.0.0.1", which resolvers turn into addresses too."""
    if ":" in host:  # an IPv6 address (from [brackets]): judged by its value
        return
    last = host.rsplit(".", 1)[-1]
    if re.fullmatch(r"[0-9]+|0[xX][0-9a-fA-F]*", last):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise EndpointRefused(
                f"the host {host!r} is a number, not a name: write an IPv4 address as "
                "four decimal parts (a.b.c.d)"
            ) from None


def _allowed(allowed_hosts: Iterable[str]) -> tuple[set[str], list]:
    names, networks = set(), []
    for entry in allowed_hosts or ():
        entry = str(entry).strip().lower().strip("[]").rstrip(".")
        if not entry:
            continue
        names.add(entry)
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            pass
    return names, networks


def _address(text: str) -> IPAddress:
    addr = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone
    if isinstance(addr, ipaddress.IPv6Address):  # an IPv4 address inside IPv6 is judged as IPv4
        if addr.ipv4_mapped:
            return addr.ipv4_mapped
        if addr.sixtofour:
            return addr.sixtofour
        if addr in NAT64:
            return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return addr


def _refusal(addr: IPAddress, host_listed: bool, networks: list) -> str:
    """Why the server may not connect to addr ("" when it may)."""
    if addr in METADATA_ADDRESSES:
        return "a cloud metadata address, which is never allowed"
    if addr.is_unspecified or (addr.version == 4 and addr in THIS_NETWORK):
        return "an unspecified address, which is never allowed"
    if addr.is_link_local:
        return "a link-local address, which is never allowed"
    if addr.is_multicast:
        return "a multicast address, which is never allowed"
    if addr.is_reserved and not addr.is_loopback:  # ::1 lies in the reserved ::/8
        return "a reserved address, which is never allowed"
    if addr.is_global and not addr.is_private:
        return ""
    if host_listed or any(addr.version == n.version and addr in n for n in networks):
        return ""
    kind = "a loopback" if addr.is_loopback else "a private"
    return (
        f"{kind} address: allowed only for hosts listed in MODEL_ENDPOINT_ALLOWED_HOSTS "
        "(ask the server's operator)"
    )


def _connect_checked(host: str, port: int, allowed_hosts, timeout) -> socket.socket:
    last: OSError | None = None
    for family, socktype, proto, _name, sockaddr in resolve_checked(host, port, allowed_hosts):
        sock = socket.socket(family, socktype, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    raise last or OSError(f"cannot connect to {host}:{port}")


class _CheckedHTTPConnection(http.client.HTTPConnection):
    """Connects only to an address that passed the check, looked up at connect time."""

    def __init__(self, host, port, *, allowed_hosts, timeout):
        super().__init__(host, port, timeout=timeout)
        self.allowed_hosts = allowed_hosts

    def connect(self):
        self.sock = _connect_checked(self.host, self.port, self.allowed_hosts, self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _CheckedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host, port, *, allowed_hosts, timeout):
        self.tls = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self.tls)
        self.allowed_hosts = allowed_hosts

    def connect(self):
        sock = _connect_checked(self.host, self.port, self.allowed_hosts, self.timeout)
        self.sock = self.tls.wrap_socket(
            sock, server_hostname=self.host
        )  # certificate of the name, not the IP
