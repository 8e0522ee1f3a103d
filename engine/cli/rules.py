"""``beacon rules ...``: check, test, publish and roll back rule packs; run one in shadow.

Written for the people who own the rules (marketing, risk): every message says in
plain words what happened, what was refused and why, and whether anything changed.
Exit status: 0 done, 1 refused (bad packs, failing tests, unknown version), 2 could
not run (no Redis configured, Redis down).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from engine.decide.pipeline import DecisionPolicy
from engine.decide.rulebook import CaseResult, load, run_cases
from engine.domain.decision import VERDICT_ORDER
from engine.errors import BeaconError
from engine.rules.pack import Compiled, RulePackError, read_bundle
from engine.settings import Settings
from engine.store.rules import RuleStore, UnknownVersion
from engine.store.ruleshadow import ShadowChanged, ShadowStore
from engine.store.signkeys import signer

T = TypeVar("T")


def add_commands(sub: Any) -> None:
    """Register ``beacon rules`` and its subcommands (each with ``--help``)."""
    what = "check, test, publish and roll back rule packs"
    # Not `add`: the server options it adds (--kafka, --http-port) mean nothing here.
    p = sub.add_parser("rules", help=what, description=what)
    p.set_defaults(func=lambda a: _help(p))
    rsub = p.add_subparsers(
        dest="rules_command", metavar="{validate,test,publish,history,rollback,show,shadow,promote}"
    )

    def cmd(name: str, help_: str, fn: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        c: argparse.ArgumentParser = rsub.add_parser(name, help=help_, description=help_)
        c.add_argument("--config", help="TOML settings file (else BEACON_CONFIG, env vars, defaults)")
        c.set_defaults(func=fn)
        return c

    def folder(c: argparse.ArgumentParser) -> None:
        c.add_argument("dir", nargs="?", metavar="DIR", help="folder of *.yaml packs (default: rules_dir)")

    def redis(c: argparse.ArgumentParser) -> None:
        c.add_argument("--redis-url", dest="redis_url", help="Redis URL (else BEACON_REDIS_URL)")
        c.add_argument("--key-prefix", dest="key_prefix", help="Redis key prefix (else BEACON_KEY_PREFIX)")

    def who(c: argparse.ArgumentParser) -> None:
        c.add_argument("--note", default="", help="why: shown in the history")
        c.add_argument("--author", default=_user(), help="who (default: your login name)")

    folder(cmd("validate", "check every pack of a folder and try it on sample events", cmd_validate))
    folder(cmd("test", "run the test cases written in the packs", cmd_test))
    c = cmd("publish", "validate and test a folder, then make it the rules every worker uses", cmd_publish)
    folder(c)
    redis(c)
    who(c)
    beside = "run it beside the live version on every decision, acting on nothing (see `rules shadow`)"
    c.add_argument("--shadow", action="store_true", help=beside)
    c = cmd("history", "list published versions, newest first", cmd_history)
    c.add_argument("--limit", type=int, default=20, help="how many entries (default 20)")
    redis(c)
    c = cmd("rollback", "make an earlier version the current one again", cmd_rollback)
    c.add_argument("version", metavar="VERSION", help="from `beacon rules history`, e.g. v3-0a1b2c3d4e5f")
    redis(c)
    who(c)
    redis(cmd("show", "show the version the workers use now and its files", cmd_show))
    c = cmd("shadow", "show the shadow version run beside the live one, or end it (--stop)", cmd_shadow)
    c.add_argument("--stop", action="store_true", help="end the shadow run (the live version is untouched)")
    redis(c)
    who(c)
    c = cmd("promote", "make the shadow version the live one (a signed publish of its files)", cmd_promote)
    redis(c)
    who(c)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in some containers
        return "unknown"


def _settings(args: argparse.Namespace) -> Settings:
    from engine.cli.common import load_settings

    return load_settings(args)


def _folder(args: argparse.Namespace, settings: Settings) -> Path:
    return Path(args.dir) if getattr(args, "dir", None) else settings.rules_path()


# -- validate and test: no Redis needed ------------------------------------------------


def _compile(folder: Path, settings: Settings) -> tuple[dict[str, str], Compiled] | None:
    """The folder's files and their bundle compiled and dry-run, or None after printing why not."""
    try:
        files = read_bundle(folder)
        return files, load(files, frozenset(settings.channels), "local", settings.event_types)
    except RulePackError as exc:
        print(f"NOT VALID: the rules in {folder} were refused.\n  {exc}")
        return None


def _counts(compiled: Compiled) -> str:
    r = compiled.rules
    return (
        f"{len(r.risk_rules)} risk rules, {len(r.typologies)} typologies, {len(r.offers)} offers, "
        f"{len(compiled.cases)} test cases"
    )


def cmd_validate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    folder = _folder(args, settings)
    loaded = _compile(folder, settings)
    if loaded is None:
        return 1
    compiled = loaded[1]
    n = len(settings.channels) * len(settings.event_types)
    print(f"VALID: {folder}: {_counts(compiled)}; every condition ran on {n} sample events.")
    print(f"Without customer state: {_floors(compiled)}.")
    return 0


def _floors(compiled: Compiled) -> str:
    """The pack's ``when_state_unavailable``, as a risk officer would check it."""
    policy = compiled.rules.when_state_unavailable
    by_verdict: dict[str, list[str]] = {}
    for etype, verdict in sorted(policy.types.items()):
        by_verdict.setdefault(verdict, []).append(etype)
    listed = [f"{v} for {', '.join(by_verdict[v])}" for v in VERDICT_ORDER if v in by_verdict]
    return "; ".join([*listed, f"{policy.default} for any other type"])


def _report_cases(results: list[CaseResult]) -> bool:
    """Print failing cases and a summary; True when all passed."""
    failed = [r for r in results if not r.passed]
    for r in failed:
        print(f"FAILED  {r.file}: {r.name}")
        for problem in r.problems:
            print(f"    - {problem}")
    if not results:
        print("no test cases in the packs (add some under `tests:`)")
    else:
        print(f"{len(results)} test cases: {len(results) - len(failed)} passed, {len(failed)} failed")
    return not failed


def _passes(compiled: Compiled, settings: Settings) -> bool:
    policy = DecisionPolicy(settings.risk_step_up, settings.risk_block, settings.max_actions)
    return _report_cases(run_cases(compiled, policy))


def cmd_test(args: argparse.Namespace) -> int:
    settings = _settings(args)
    loaded = _compile(_folder(args, settings), settings)
    if loaded is None:
        return 1
    return 0 if _passes(loaded[1], settings) else 1


# -- publish, history, rollback, show: Redis -------------------------------------------


def _with_store(settings: Settings, work: Callable[[RuleStore], Awaitable[T]]) -> T:
    """Run ``work`` with a rule store on a fresh connection, closed afterwards."""
    return _with_stores(settings, lambda store, _: work(store))


def _with_stores(settings: Settings, work: Callable[[RuleStore, ShadowStore], Awaitable[T]]) -> T:
    """Run ``work`` with the rule and shadow stores on a fresh connection, closed afterwards."""
    if not settings.redis_url:
        raise BeaconError("no Redis configured: set BEACON_REDIS_URL or pass --redis-url")

    async def run() -> T:
        from engine.store.redisio import connect

        client = connect(settings)
        try:
            # Signed with the publisher's key (BEACON_SIGNING_KEY_FILE): workers holding the
            # public keys run only signed bundles, or their own packs (README, Signed ...).
            key = signer(settings) if settings.signing_key_file else None
            prefix = settings.key_prefix
            return await work(RuleStore(client, prefix, signer=key), ShadowStore(client, prefix, signer=key))
        finally:
            await client.aclose()

    return asyncio.run(run())


def cmd_publish(args: argparse.Namespace) -> int:
    settings = _settings(args)
    folder = _folder(args, settings)
    loaded = _compile(folder, settings)
    if loaded is None or not _passes(loaded[1], settings):
        print("NOT PUBLISHED: fix the problems above; the workers keep the rules they have.")
        return 1
    files, compiled = loaded
    if args.shadow:
        return _publish_shadow(args, settings, folder, files, compiled)

    async def publish(store: RuleStore) -> tuple[str, bool]:
        current = await store.current()
        if current is not None and current[1] == files:
            return current[0], False
        return await store.publish(files, args.author, args.note), True

    version, new = _with_store(settings, publish)
    if not new:
        print(f"NOT PUBLISHED: {folder} is identical to the current version {version}; nothing changed.")
        return 0
    print(f"PUBLISHED {version} from {folder} ({_counts(compiled)}).")
    print(f"Workers switch to it within about {settings.rules_poll_s:g} seconds.")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def read(store: RuleStore) -> tuple[str | None, list[dict[str, Any]]]:
        return await store.current_version(), await store.history(args.limit)

    current, entries = _with_store(settings, read)
    if not entries:
        print("no rules published yet (the first worker publishes the packs of rules_dir)")
        return 0
    print(f"current version: {current}\n")
    print(f"  {'version':<18} {'when (UTC)':<20} {'action':<9} {'by':<16} note")
    marked = False  # only the entry that made the current version current
    for e in entries:
        when = datetime.fromtimestamp(float(e["published_at"]), UTC).strftime("%Y-%m-%d %H:%M:%S")
        mark = "*" if e["version"] == current and not marked else " "
        marked = marked or mark == "*"
        print(f"{mark} {e['version']:<18} {when:<20} {e['action']:<9} {e['author']:<16} {e['note']}")
    print("\n* = current")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def rollback(store: RuleStore) -> tuple[str, bool]:
        files = await store.bundle(args.version)
        try:
            load(files, frozenset(settings.channels), args.version, settings.event_types)
        except RulePackError as exc:
            return f"NOT ROLLED BACK: {args.version} no longer passes validation.\n  {exc}", False
        if not await store.rollback(args.version, args.author, args.note):
            return f"{args.version} is already the current version; nothing changed.", True
        return (
            f"ROLLED BACK: {args.version} is the current version again. "
            f"Workers switch to it within about {settings.rules_poll_s:g} seconds.",
            True,
        )

    try:
        message, ok = _with_store(settings, rollback)
    except UnknownVersion as exc:
        print(f"NOT ROLLED BACK: {exc}")
        return 1
    print(message)
    return 0 if ok else 1


def cmd_show(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def read(store: RuleStore, shadow: ShadowStore) -> tuple[Any, str | None]:
        return await store.current(), await shadow.version()

    current, shadow = _with_stores(settings, read)
    if current is None:
        print("no rules published yet (the first worker publishes the packs of rules_dir)")
        return 0
    version, files = current
    print(f"current version: {version}")
    for name in sorted(files):
        print(f"  {name}  ({len(files[name].splitlines())} lines)")
    if shadow is not None:
        print(f"shadow version: {shadow} (run beside it: `beacon rules shadow`)")
    return 0


# -- shadow: a candidate version beside the live one ----------------------------------


def _publish_shadow(
    args: argparse.Namespace, settings: Settings, folder: Path, files: dict[str, str], compiled: Compiled
) -> int:
    async def start(store: RuleStore, shadow: ShadowStore) -> tuple[str, str | None]:
        current = await store.current()
        if current is not None and current[1] == files:
            return "live", current[0]
        running = await shadow.signed()
        if running is not None and running[1] == files:
            return "shadow", running[0]
        return "new", await shadow.start(files, args.author, args.note)

    what, version = _with_stores(settings, start)
    if what != "new":
        print(f"NOT PUBLISHED: {folder} is identical to the {what} version {version}; nothing changed.")
        return 0
    print(f"SHADOW {version} from {folder} ({_counts(compiled)}).")
    print(f"Workers run it beside the live version within about {settings.rules_poll_s:g} seconds, acting on")
    print("nothing: differences go to decisions.shadow and beacon_shadow_* metrics.")
    print("`beacon rules promote` makes it live; `beacon rules shadow --stop` ends it.")
    return 0


def cmd_shadow(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def look(store: RuleStore, shadow: ShadowStore) -> tuple[str | None, dict[str, Any] | None]:
        if args.stop:
            stopped = await shadow.stop(args.author, args.note)
            return None, None if stopped is None else {"version": stopped}
        return await store.current_version(), await shadow.status()

    live, status = _with_stores(settings, look)
    if args.stop:
        if status is None:
            print("no shadow version runs; nothing changed.")
        else:
            print(f"SHADOW STOPPED: {status['version']} no longer runs beside the live version "
                  f"(workers stop within about {settings.rules_poll_s:g} seconds).")  # fmt: skip
        return 0
    print(f"live version:   {live}")
    if status is None:
        print("shadow version: none (`beacon rules publish --shadow DIR` starts one)")
        return 0
    since = datetime.fromtimestamp(float(status["since"]), UTC).strftime("%Y-%m-%d %H:%M:%S")
    print(f"shadow version: {status['version']}, since {since} UTC, by {status['author']}"
          + (f": {status['note']}" if status["note"] else ""))  # fmt: skip
    print("Differences: the decisions.shadow topic; counts: beacon_shadow_* metrics.")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def promote(store: RuleStore, shadow: ShadowStore) -> tuple[str, int]:
        running = await shadow.signed()
        if running is None:
            return "NOT PROMOTED: no shadow version runs (`beacon rules publish --shadow DIR`).", 1
        version, files, _ = running
        try:
            compiled = load(files, frozenset(settings.channels), version, settings.event_types)
        except RulePackError as exc:
            return f"NOT PROMOTED: {version} no longer passes validation.\n  {exc}", 1
        if not _passes(compiled, settings):
            return f"NOT PROMOTED: the test cases of {version} fail (above).", 1
        try:
            live = await shadow.promote(version, files, args.author, args.note)
        except ShadowChanged as exc:
            return f"NOT PROMOTED: {exc}", 1
        return (
            f"PROMOTED: shadow {version} is now the live version {live}; the shadow run ended. "
            f"Workers switch to it within about {settings.rules_poll_s:g} seconds.",
            0,
        )

    message, code = _with_stores(settings, promote)
    print(message)
    return code
