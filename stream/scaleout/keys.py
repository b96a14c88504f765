"""CURVE keys for the links that leave the host: a pipeline's broker and the workers that join it.

ZeroMQ's CURVE mechanism (CurveZMQ: Curve25519 keys, encrypted and authenticated connections,
http://curvezmq.org) secures the address a broker listens on (``workers.listen``): the broker is
the CURVE server, and only workers holding the shared worker secret key may connect; a peer
without it never gets past the handshake, so it can neither read the frames nor send a result.

One keys folder per installation (``$COLORIZE_KEYS``, else ``~/.config/colorize/keys``, mode 0700)
holds two key pairs, written by :func:`ensure_keys` on first use (or ``colorize keys``):

    pipeline.key / pipeline.key_secret   the broker's pair (workers need only pipeline.key)
    worker.key / worker.key_secret       the pair every worker presents

A worker host gets ``pipeline.key`` and ``worker.key_secret`` (the secret file holds both halves
of the worker pair) in its own keys folder. Local replicas reach the broker through the run's
private folder and need no keys.
"""
from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

KEYS_ENV = "COLORIZE_KEYS"
PIPELINE, WORKER = "pipeline", "worker"


class KeysError(Exception):
    """Keys missing or unreadable (one-line message naming the file)."""


def keys_dir() -> Path:
    """The keys folder: ``$COLORIZE_KEYS``, else ``~/.config/colorize/keys``."""
    return Path(os.environ.get(KEYS_ENV) or Path.home() / ".config" / "colorize" / "keys")


def ensure_keys(folder: Path | None = None, renew: bool = False) -> tuple[Path, bool]:
    """Create the two key pairs in ``folder`` (default :func:`keys_dir`) unless present (or when
    ``renew``); returns the folder and whether keys were written. The folder is made mode 0700
    and the secret files 0600."""
    import zmq.auth

    folder = Path(folder or keys_dir())
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, stat.S_IRWXU)
    wrote = False
    for name in (PIPELINE, WORKER):
        if renew or not (folder / f"{name}.key_secret").is_file():
            public, secret = zmq.auth.create_certificates(str(folder), name)
            os.chmod(secret, stat.S_IRUSR | stat.S_IWUSR)
            wrote = True
    return folder, wrote


def copy_hint(folder: Path) -> str:
    """One line telling how to give a worker host the keys."""
    return (f"workers on other hosts need the pipeline's keys: copy {folder / (PIPELINE + '.key')} and "
            f"{folder / (WORKER + '.key_secret')} into their keys folder (${KEYS_ENV} or ~/.config/colorize/keys)")


def _load(path: Path, secret: bool) -> tuple[bytes, bytes | None]:
    import zmq.auth

    try:
        public, secret_key = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise KeysError(f"cannot read CURVE key {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if secret and not secret_key:
        raise KeysError(f"{path} holds no secret key")
    return public, secret_key


@dataclass(frozen=True)
class ServerKeys:
    """What a listening broker needs: its own pair, and the folder of public keys it lets in."""

    public: bytes
    secret: bytes
    allowed_dir: Path

    @classmethod
    def load(cls, folder: Path) -> "ServerKeys":
        public, secret = _load(folder / f"{PIPELINE}.key_secret", secret=True)
        _load(folder / f"{WORKER}.key", secret=False)
        return cls(public, secret, folder)


@dataclass(frozen=True)
class WorkerKeys:
    """What a joining worker needs: the broker's public key and the worker pair."""

    server_public: bytes
    public: bytes
    secret: bytes

    @classmethod
    def load(cls, folder: Path) -> "WorkerKeys":
        server_public, _ = _load(folder / f"{PIPELINE}.key", secret=False)
        public, secret = _load(folder / f"{WORKER}.key_secret", secret=True)
        return cls(server_public, public, secret)

    def apply(self, socket) -> None:
        """Make ``socket`` (before it connects) a CURVE client of the broker."""
        import zmq

        socket.setsockopt(zmq.CURVE_SERVERKEY, self.server_public)
        socket.setsockopt(zmq.CURVE_PUBLICKEY, self.public)
        socket.setsockopt(zmq.CURVE_SECRETKEY, self.secret)


def main(argv: list[str]) -> int:
    """``colorize keys [--renew]``: create the keys if absent and say where they are."""
    import argparse

    parser = argparse.ArgumentParser(prog="colorize keys",
                                     description="Create the CURVE keys that let workers join a pipeline "
                                                 f"(in ${KEYS_ENV}, else ~/.config/colorize/keys).")
    parser.add_argument("--renew", action="store_true", help="replace existing keys (workers need the new ones)")
    args = parser.parse_args(argv)
    try:
        folder, wrote = ensure_keys(renew=args.renew)
    except OSError as exc:
        print(f"error: cannot write keys in {keys_dir()}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"{'created' if wrote else 'using'} keys in {folder}")
    print(copy_hint(folder))
    return 0
