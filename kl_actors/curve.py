"""CURVE keys and the authenticated TCP side of the internal sockets (downloaders on other hosts).

The service host (`remote.listen`) binds, besides its ipc endpoints, one TCP endpoint each for the
task queue, the results, the writer and the bus, CURVE only: ZeroMQ encrypts every frame and a
ZAP handler (pyzmq's `ThreadAuthenticator`, one per process that binds) lets in only clients
whose public key lies in `<keys_dir>/authorized/`. A peer without CURVE, with another server
key, or with a key not listed never completes its handshake, so it is never given a task and
nothing it sends reaches a socket; the refusal is logged by the binding actor (`remote_refused`).
A downloader host (`remote.connect`) joins with its own key pair and the server's public key.

Key layout made by `python supervisor.py keygen DIR [--client NAME]`:
    DIR/server.key, DIR/server.key_secret     the service host's pair (secret: mode 0600)
    DIR/authorized/NAME.key                   public keys let in
    DIR/NAME/{client.key, client.key_secret, server.key}   the bundle to copy to host NAME

Owns key files and socket security options; never opens a socket or decides what an actor binds.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

SERVER = "server"
CLIENT = "client"
AUTHORIZED = "authorized"
CLIENT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
# Handshake failures a bound remote socket reports (monitor events) and what they mean.
REFUSALS = {
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "handshake failed",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "no CURVE, or another server key",
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "client key not authorized",
}


class CurveKeyError(Exception):
    """Missing or unreadable keys: a clear start error, never a silent plain-text socket."""


def _secret_file(path: Path) -> None:
    os.chmod(path, 0o600)


def keygen(keys_dir: str, client: str | None = None) -> list[Path]:
    """Make the server pair (if absent) and, with `client`, that host's bundle; returns the files
    written. Never overwrites a key: a second run adds what is missing."""
    root = Path(keys_dir)
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    (root / AUTHORIZED).mkdir(mode=0o700, exist_ok=True)
    written: list[Path] = []
    if not (root / f"{SERVER}.key_secret").exists():
        public, secret = zmq.auth.create_certificates(str(root), SERVER)
        _secret_file(Path(secret))
        written += [Path(public), Path(secret)]
    if client is not None:
        if not CLIENT_NAME_RE.fullmatch(client) or client in (SERVER, AUTHORIZED):
            raise CurveKeyError(f"client name {client!r}: use letters, digits, '.', '_' or '-' (not {SERVER!r} "
                            f"or {AUTHORIZED!r})")
        bundle = root / client
        if bundle.exists():
            raise CurveKeyError(f"{bundle} exists: client {client!r} has keys already")
        bundle.mkdir(mode=0o700)
        public, secret = zmq.auth.create_certificates(str(bundle), CLIENT)
        _secret_file(Path(secret))
        shutil.copy(root / f"{SERVER}.key", bundle / f"{SERVER}.key")
        allowed = root / AUTHORIZED / f"{client}.key"
        shutil.copy(public, allowed)
        written += [Path(public), Path(secret), bundle / f"{SERVER}.key", allowed]
    return written


def _load(path: Path, secret: bool) -> tuple[bytes, bytes | None]:
    try:
        public, secret_key = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise CurveKeyError(f"{path}: {exc}") from None
    if secret and not secret_key:
        raise CurveKeyError(f"{path}: holds no secret key")
    return public, secret_key


def check_server(keys_dir: str) -> int:
    """The service host's keys are usable; returns how many clients are authorized. Raises CurveKeyError."""
    root = Path(keys_dir)
    _load(root / f"{SERVER}.key_secret", secret=True)
    allowed = sorted((root / AUTHORIZED).glob("*.key")) if (root / AUTHORIZED).is_dir() else []
    for path in allowed:
        _load(path, secret=False)
    if not allowed:
        raise CurveKeyError(f"{root / AUTHORIZED}: no authorized client key; add one with "
                        f"`python supervisor.py keygen {keys_dir} --client NAME`")
    return len(allowed)


def check_client(keys_dir: str) -> None:
    root = Path(keys_dir)
    _load(root / f"{CLIENT}.key_secret", secret=True)
    _load(root / f"{SERVER}.key", secret=False)


def serve(sock: zmq.Socket, keys_dir: str) -> None:
    """Make the next bind of `sock` CURVE-only (binds made before keep their mechanism)."""
    public, secret = _load(Path(keys_dir) / f"{SERVER}.key_secret", secret=True)
    sock.curve_publickey = public
    sock.curve_secretkey = secret
    sock.curve_server = True


def join(sock: zmq.Socket, keys_dir: str) -> None:
    """Make the next connect of `sock` a CURVE client of the service host."""
    root = Path(keys_dir)
    public, secret = _load(root / f"{CLIENT}.key_secret", secret=True)
    server_public, _ = _load(root / f"{SERVER}.key", secret=False)
    sock.curve_publickey = public
    sock.curve_secretkey = secret
    sock.curve_serverkey = server_public


def authenticator(context: zmq.Context, keys_dir: str) -> ThreadAuthenticator:
    """The ZAP handler of one process: only keys in `<keys_dir>/authorized/` get in."""
    auth = ThreadAuthenticator(context)
    auth.start()
    auth.configure_curve(domain="*", location=str(Path(keys_dir) / AUTHORIZED))
    return auth
