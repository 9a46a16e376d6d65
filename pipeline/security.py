"""CURVE authentication for endpoints that leave the host (tcp://), with pyzmq's ``zmq.auth``.

A keys folder holds the server's certificate (``server.key``, ``server.key_secret``), one
client's (``client.key``, ``client.key_secret``) and ``clients/``, the public keys of every
client the server accepts; ``create_keys`` writes all of it.

A process has one ZAP handler per context (``start_authenticator``); each server socket names
its own domain in it, so that the control channel and the publish endpoint can take different
keys folders.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator


def create_keys(folder: Path) -> None:
    """Server and client certificates; the client's public key is authorised."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("server", "client"):
        _, secret = zmq.auth.create_certificates(str(folder), name)
        Path(secret).chmod(0o600)
    (folder / "clients").mkdir(exist_ok=True)
    shutil.copy(folder / "client.key", folder / "clients" / "client.key")


def _load(folder: Path, name: str) -> tuple[bytes, bytes]:
    path = folder / f"{name}.key_secret"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such key (create keys with 'vestwatch keys')")
    public, secret = zmq.auth.load_certificate(str(path))
    return public, secret


def start_authenticator(context: zmq.Context) -> ThreadAuthenticator:
    """The context's ZAP handler; stop it when the context's sockets are closed."""
    authenticator = ThreadAuthenticator(context)
    authenticator.start()
    return authenticator


def secure_server(socket: zmq.Socket, authenticator: ThreadAuthenticator, folder: Path, domain: str) -> None:
    """Make ``socket`` (before bind) a CURVE server that accepts only the keys in ``folder/clients``."""
    public, secret = _load(folder, "server")
    authenticator.configure_curve(domain=domain, location=str(folder / "clients"))
    socket.zap_domain = domain.encode()
    socket.curve_secretkey, socket.curve_publickey, socket.curve_server = secret, public, True


def secure_client(socket: zmq.Socket, folder: Path) -> None:
    """Make ``socket`` (before connect) a CURVE client of the server whose public key is in ``folder``."""
    public, secret = _load(folder, "client")
    server_public, _ = zmq.auth.load_certificate(str(folder / "server.key"))
    socket.curve_secretkey, socket.curve_publickey, socket.curve_serverkey = secret, public, server_public
