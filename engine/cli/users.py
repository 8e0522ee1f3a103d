"""``beacon users``: people who log in to the console, and API tokens for channel systems."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import time
from typing import Any

from engine.errors import BeaconError
from engine.settings import Settings
from engine.store.redisio import connect
from engine.store.users import ROLES, AuthStore


def add_commands(sub: Any) -> None:
    what = "manage users (console logins) and API tokens"
    p = sub.add_parser("users", help=what, description=what)
    p.set_defaults(func=lambda a: (p.print_help(), 0)[1])
    usub = p.add_subparsers(dest="users_command", metavar="{add,remove,token,tokens,revoke,list}")

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
    c = cmd("remove", "remove a person's login (their sessions end)", cmd_remove)
    c.add_argument("name")
    c = cmd("token", "create an API token (printed once; only its hash is kept)", cmd_token)
    days = "days until it expires (else BEACON_TOKEN_TTL_DAYS; at most BEACON_TOKEN_MAX_DAYS)"
    c.add_argument("--expires-days", dest="expires_days", type=int, help=days)
    c.add_argument("--role", default="channel", choices=list(ROLES))
    c.add_argument("--channel", help="the channel a channel token decides for")
    c.add_argument("--name", default="", help="what the token is for (shown in audit trails)")
    cmd("list", "list people and their roles", cmd_list)
    cmd("tokens", "list API tokens: id, role, channel, name, created, expires, last used", cmd_tokens)
    c = cmd("revoke", "revoke an API token by id, or end every session of a person (--user)", cmd_revoke)
    c.add_argument("token_id", nargs="?", help="the id in bk_<id>_... (see `beacon users tokens`)")
    c.add_argument("--user", help="end this person's sessions instead (they may log in again)")


def _settings(args: argparse.Namespace) -> Settings:
    from engine.cli.common import load_settings

    s = load_settings(args)
    if not s.redis_url:
        raise BeaconError("needs BEACON_REDIS_URL (users and tokens live in the workers' Redis)")
    return s


async def _with_store(s: Settings, fn: Any) -> Any:
    client = connect(s)
    try:
        store = AuthStore(
            client,
            s.key_prefix,
            s.session_ttl_s,
            session_idle_s=s.session_idle_s,
            token_ttl_s=s.token_ttl_days * 86400,
            token_max_s=s.token_max_days * 86400,
        )
        return await fn(store)
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
    expires_s = None if args.expires_days is None else args.expires_days * 86400
    token = asyncio.run(
        _with_store(s, lambda store: store.add_token(args.role, name, args.channel, expires_s))
    )
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


def cmd_remove(args: argparse.Namespace) -> int:
    if not asyncio.run(_with_store(_settings(args), lambda store: store.remove_user(args.name))):
        raise BeaconError(f"no user {args.name}")
    print(f"user {args.name} removed; their sessions have ended")
    return 0


def _when(ts: float | None) -> str:
    return "never" if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def cmd_tokens(args: argparse.Namespace) -> int:
    tokens = asyncio.run(_with_store(_settings(args), lambda store: store.tokens()))
    print("id\trole\tchannel\tname\tcreated\texpires\tlast used")
    for token_id, t in sorted(tokens.items(), key=lambda kv: kv[1]["created"] or 0):
        print("\t".join([token_id, t["role"], t["channel"] or "-", t["name"] or "-", _when(t["created"]),
                         _when(t["expires"]), _when(t["last_used"])]))  # fmt: skip
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    if bool(args.token_id) == bool(args.user):
        raise BeaconError("name a token id, or --user NAME, not both")
    s = _settings(args)
    bound = f"workers refuse it within {s.auth_cache_s:g} s (BEACON_AUTH_CACHE_S)"
    if args.user:
        asyncio.run(_with_store(s, lambda store: store.revoke_sessions(args.user)))
        print(f"sessions of {args.user} ended; {bound}")
        return 0
    if not asyncio.run(_with_store(s, lambda store: store.revoke_token(args.token_id))):
        raise BeaconError(f"no token {args.token_id}")
    print(f"token {args.token_id} revoked; {bound}")
    return 0
