"""Redis ACL users, one per process role, with least privilege: config/redis/users.acl.

Each role gets the key patterns and commands its process needs, and no more:

- ``worker`` (``beacon worker``: decisions, the alert desk, logins and sessions): every key
  under the prefix; no dangerous or admin command (FLUSHALL, CONFIG, ACL, DEBUG, KEYS,
  MONITOR, SHUTDOWN, ...), only the few read-only ones a client needs (INFO, CLUSTER SLOTS).
- ``trainer`` (``beacon trainer``): the feedback ledger (``P:fb:*``) and the model snapshots
  (``P:models:*``) only: it cannot read or write users, tokens or sessions (``P:auth:*``),
  the rules, or a customer's state.
- ``admin`` (the operator's CLI: ``beacon users``, ``rules``, ``models``, ``erase``,
  ``doctor``): every key under the prefix, the same commands as the worker; its own
  password, so it can be rotated or turned off apart from the workers'.
- ``replica`` (Redis Cluster replicas, ``masteruser``): only what replication runs.
- ``default``: off, so a client without a user is refused.

Passwords are stored as SHA-256 (``#<hex>``) of the secret file ``redis_<role>_password``;
without a secrets directory the file holds placeholders ``#<redis_<role>_password>``,
which the Redis container of docker compose replaces with the hashes of its Docker secrets
at start (Redis refuses to load a placeholder: fail closed).

>>> print(acl_line("trainer", "beacon", None).replace(" ", chr(10)))  # doctest: +ELLIPSIS
user
beacon-trainer
reset
on
#<redis_trainer_password>
~beacon:fb:*
~beacon:models:*
resetchannels
&beacon:models:changed
+@all
-@dangerous
...

Regenerate: ``python -m engine.ops.redisacl --prefix beacon > config/redis/users.acl``.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ConfigError


@dataclass(frozen=True)
class Role:
    keys: tuple[str, ...]  # patterns after the prefix ("P:" is prepended)
    channels: tuple[str, ...]
    commands: str


# What a client library runs on connect or to find a cluster's slots, taken back from
# @dangerous: reads of server state, nothing that changes it.
_CLIENT = (
    "+info +client|setname +client|getname +client|id +client|setinfo"
    " +cluster|slots +cluster|nodes +cluster|info"
)
_APP = f"+@all -@dangerous {_CLIENT}"

ROLES: dict[str, Role] = {
    "worker": Role(("*",), ("*",), _APP),
    "trainer": Role(("fb:*", "models:*"), ("models:changed",), _APP),
    "admin": Role(("*",), ("*",), _APP),
    "replica": Role((), (), "-@all +psync +replconf +ping"),
}


def user_name(role: str, prefix: str) -> str:
    """``beacon-worker``: the ``redis_username`` of a process of that role."""
    return f"{prefix}-{role}"


def password_hash(secret: str) -> str:
    """What Redis keeps: SHA-256 of the password, as hex (``#<hex>`` in an ACL file).

    >>> password_hash("s3cret")[:16]
    '1ec1c26b50d5d3c5'
    """
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_name(role: str) -> str:
    return f"redis_{role}_password"


def acl_line(role: str, prefix: str, secrets_dir: Path | None) -> str:
    spec = ROLES[role]
    if secrets_dir is None:
        password = f"#<{secret_name(role)}>"
    else:
        path = secrets_dir / secret_name(role)
        try:
            secret = path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(
                f"redis ACL: cannot read the {role} password from {path}: {exc.strerror}"
            ) from exc
        if not secret:
            raise ConfigError(f"redis ACL: the {role} password in {path} is empty")
        password = f"#{password_hash(secret)}"
    keys = [f"~{prefix}:{k}" for k in spec.keys]
    channels = [f"&{prefix}:{c}" for c in spec.channels]
    parts = ["user", user_name(role, prefix), "reset", "on", password, *keys, "resetchannels", *channels]
    return " ".join([*parts, spec.commands])


def acl_file(prefix: str, secrets_dir: Path | None = None) -> str:
    """The whole ACL file: ``default`` off, then one user per role."""
    lines = ["user default off resetchannels -@all"]
    lines += [acl_line(role, prefix, secrets_dir) for role in ROLES]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.ops.redisacl", description=__doc__.split("\n")[0])
    parser.add_argument("--prefix", default="beacon", help="key_prefix of the deployment")
    parser.add_argument("--secrets-dir", type=Path, help="directory of redis_<role>_password files")
    parser.add_argument("--out", type=Path, help="write here instead of stdout")
    args = parser.parse_args(argv)
    try:
        text = acl_file(args.prefix, args.secrets_dir)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
