"""``beacon users``: people who log in to the console, and API tokens for channel systems."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from typing import Any

from engine.errors import BeaconError
from engine.settings import Settings
from engine.store.redisio import connect
from engine.store.users import ROLES, AuthStore


def add_commands(sub: Any) -> None:
    what = "manage users (console logins) and API tokens"
    p = sub.add_parser("users", help=what, description=what)
    p.set_defaults(func=lambda a: (p.print_help(), 0)[1])
    usub = p.add_subparsers(dest="users_command", metavar="{add,token,list}")

    def cmd(name: str, help_: str, fn: Any) -> argparse.ArgumentParser:
        c: argparse.ArgumentParser = usub.add_parser(name, help=help_, description=help_)
        c.add_argument("--config", help="TOML settings file (else BEACON_CONFIG, env vars, defaults)")
        c.add_argument("--redis-url", dest="redis_url", help="Redis URL (else BEACON_REDIS_URL)")
        c.set_defaults(func=fn)
        return c

    c = cmd("add", "create or replace a person's login", cmd_add)
    c.add_argument("name")
    c.add_argument("--role", required=True, choices=[r for r in ROLES if r != "channel"])
    c.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    c = cmd("token", "create an API token (printed once; only its hash is kept)", cmd_token)
    c.add_argument("--role", default="channel", choices=list(ROLES))
    c.add_argument("--channel", help="the channel a channel token decides for")
    c.add_argument("--name", default="", help="what the token is for (shown in audit trails)")
    cmd("list", "list people and their roles", cmd_list)


def _settings(args: argparse.Namespace) -> Settings:
    from engine.cli.common import load_settings

    s = load_settings(args)
    if not s.redis_url:
        raise BeaconError("needs BEACON_REDIS_URL (users and tokens live in the workers' Redis)")
    return s


async def _with_store(s: Settings, fn: Any) -> Any:
    client = connect(s)
    try:
        return await fn(AuthStore(client, s.key_prefix, s.session_ttl_s))
    finally:
        await client.aclose()


def cmd_add(args: argparse.Namespace) -> int:
    s = _settings(args)
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass("password: ")
    asyncio.run(_with_store(s, lambda store: store.add_user(args.name, args.role, password)))
    print(f"user {args.name} ({args.role}) saved")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    s = _settings(args)
    if args.role == "channel" and args.channel not in s.channels:
        raise BeaconError(f"--channel is one of {', '.join(s.channels)} for a channel token")
    name = args.name or (f"{args.channel}-channel" if args.channel else args.role)
    token = asyncio.run(_with_store(s, lambda store: store.add_token(args.role, name, args.channel)))
    print(token)
    print(
        f"# {args.role} token '{name}': shown once, store it in the channel system's secrets", file=sys.stderr
    )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    users = asyncio.run(_with_store(_settings(args), lambda store: store.users()))
    for name, info in sorted(users.items()):
        print(f"{name}\t{info['role']}")
    return 0
