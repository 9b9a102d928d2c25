"""Where the other regions' probes listen: `--peer` flags and a peers file re-read on change.

A DaemonSet mounts one ConfigMap into every region's probe, so the file lists all regions,
including the probe's own; the probe skips its own region rather than measuring itself.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

# Region names are Kubernetes object names (RFC 1123 subdomains); anything else is a typo.
_REGION_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


class PeersError(ValueError):
    """A peer address, a region name or the peers file is malformed; the message names it."""


@dataclass(frozen=True, order=True)
class Endpoint:
    """A TCP address; `host` is a name, an IPv4 address or a bare IPv6 address."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str, what: str, *, allow_port_zero: bool = False) -> Endpoint:
        """Parses HOST:PORT (or [IPv6]:PORT); `what` names the flag or key in the error."""
        text = text.strip()
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise PeersError(f"{what}: expected HOST:PORT, got {text!r}")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        elif ":" in host:
            raise PeersError(f"{what}: write an IPv6 address in brackets, like [::1]:9000")
        lowest = 0 if allow_port_zero else 1
        if not port_text.isdigit() or not lowest <= int(port_text) <= 65535:
            raise PeersError(f"{what}: port must be an integer {lowest}-65535, got {port_text!r}")
        return cls(host=host, port=int(port_text))


def check_region_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not _REGION_NAME.match(name):
        raise PeersError(f"{what}: region must be a lower-case DNS name, got {name!r}")
    return name


def parse_peer_flag(text: str) -> tuple[str, Endpoint]:
    """Parses one `--peer REGION=HOST:PORT`."""
    region, sep, address = text.partition("=")
    if not sep:
        raise PeersError(f"--peer: expected REGION=HOST:PORT, got {text!r}")
    region = check_region_name(region.strip(), "--peer")
    return region, Endpoint.parse(address, f"--peer {region}")


def parse_peers_document(text: str, source: str) -> dict[str, Endpoint]:
    """Parses a YAML map region → "host:port"; an empty document means no peers."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise PeersError(f"{source}: not valid YAML: {error}") from error
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise PeersError(f"{source}: expected a map of region: host:port")
    peers: dict[str, Endpoint] = {}
    for key, value in document.items():
        region = check_region_name(key, source)
        if not isinstance(value, str):
            raise PeersError(f"{source}: {region}: expected a string HOST:PORT, got {value!r}")
        peers[region] = Endpoint.parse(value, f"{source}: {region}")
    return peers


class PeersFile:
    """Reads a peers file and tells when its content has changed since the last good read.

    Content is compared by hash, not mtime: a ConfigMap update swaps a symlink, and an editor may
    rewrite a file within one mtime tick.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._digest: bytes | None = None
        self._rejected_digest: bytes | None = None

    def read(self) -> dict[str, Endpoint]:
        """Reads and parses the file now; raises PeersError naming the file on any problem."""
        return self._parse(self._read_bytes())

    def read_if_changed(self) -> dict[str, Endpoint] | None:
        """Returns the new peers when the content changed, None when it did not.

        Raises PeersError when the file changed into something unusable; the next call retries.
        """
        raw = self._read_bytes()
        digest = hashlib.sha256(raw).digest()
        if digest in (self._digest, self._rejected_digest):
            return None
        try:
            return self._parse(raw)
        except PeersError:
            # Report a broken update once, not on every check, and keep the last good peers.
            self._rejected_digest = digest
            raise

    def _read_bytes(self) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError as error:
            reason = error.strerror or type(error).__name__
            raise PeersError(f"--peers-file {self.path}: cannot read: {reason}") from error

    def _parse(self, raw: bytes) -> dict[str, Endpoint]:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise PeersError(f"--peers-file {self.path}: not UTF-8 text") from error
        peers = parse_peers_document(text, f"--peers-file {self.path}")
        self._digest = hashlib.sha256(raw).digest()
        return peers


def merge_peers(
    own_region: str,
    from_flags: Mapping[str, Endpoint],
    from_file: Mapping[str, Endpoint],
) -> dict[str, Endpoint]:
    """Peers to measure: the file's, overridden by explicit flags, without the own region."""
    merged = {**from_file, **from_flags}
    merged.pop(own_region, None)
    return dict(sorted(merged.items()))
