"""``beacon keys generate DIR``: a new Ed25519 key pair for signing snapshots and rule bundles.

Writes ``DIR/signing.key`` (private, mode 0600: the trainer's and the rules publisher's
secret, BEACON_SIGNING_KEY_FILE) and ``DIR/signing.pub`` (public: what workers trust,
BEACON_SIGNING_PUBLIC_KEYS). Refuses to overwrite an existing key.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from engine.errors import BeaconError


def add_commands(sub: Any) -> None:
    what = "manage the Ed25519 keys that sign model snapshots and rule bundles"
    p = sub.add_parser("keys", help=what, description=what)
    p.set_defaults(func=lambda a: (p.print_help(), 0)[1])
    ksub = p.add_subparsers(dest="keys_command", metavar="{generate}")
    g = ksub.add_parser("generate", help="write signing.key (private, 0600) and signing.pub into DIR")
    g.add_argument("dir", metavar="DIR")
    g.set_defaults(func=cmd_generate)


def cmd_generate(args: argparse.Namespace) -> int:
    from models.ed25519 import generate_keypair, key_id, load_public_keys

    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    private_path, public_path = directory / "signing.key", directory / "signing.pub"
    for path in (private_path, public_path):
        if path.exists():
            raise BeaconError(f"{path} exists: refusing to overwrite a signing key")
    private_pem, public_pem = generate_keypair()
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(private_pem)
    public_path.write_bytes(public_pem)
    kid = key_id(load_public_keys([public_pem])[0])
    print(f"wrote {private_path} (private, give only to the trainer and rules publisher)")
    print(f"wrote {public_path} (public, key id {kid}: add to BEACON_SIGNING_PUBLIC_KEYS)")
    return 0
