"""The Lua scripts and engine/store/keys.py name the same keys: every suffix a script
appends to the key prefix or to a customer's key is declared in keys.py, and every one
declared there is used by a script, so the two cannot drift apart."""

from __future__ import annotations

import re
from importlib import resources

from engine.store import keys

# A string literal appended with `..` that starts a key part: ':profile', ':sup:', ':{dev:',
# '}:customers'. Not a lone ':' (it joins the parts of the dedupe key's '<channel>:<event_id>')
# nor text such as ': ' in an audit note.
_APPENDED = re.compile(r"\.\.\s*'(\}?:[\w{][^']*)'")


def _scripts() -> dict[str, str]:
    lua = resources.files("engine.store").joinpath("lua")
    return {f.name: f.read_text() for f in lua.iterdir() if f.name.endswith(".lua")}


def _appended(text: str) -> set[str]:
    code = "\n".join(line.split("--", 1)[0] for line in text.splitlines())  # not the comments
    return set(_APPENDED.findall(code))


def test_the_scripts_are_read() -> None:
    assert {"ingest.lua", "commit.lua", "alert_raise.lua", "alert_move.lua"} <= set(_scripts())
    assert _appended("p .. ':sup:' .. a.rule .. ':' .. x .. ': ' .. y .. '|' -- .. ':no'") == {":sup:"}


def test_every_suffix_a_script_appends_is_declared_in_keys() -> None:
    used = {name: _appended(text) for name, text in _scripts().items()}
    undeclared = {
        name: sorted(s - keys.SCRIPT_SUFFIXES) for name, s in used.items() if s - keys.SCRIPT_SUFFIXES
    }
    assert undeclared == {}, "declare these in engine/store/keys.py"


def test_every_declared_suffix_is_used_by_a_script() -> None:
    used = set().union(*(_appended(text) for text in _scripts().values()))
    assert sorted(keys.SCRIPT_SUFFIXES - used) == []


def test_the_suppression_key_is_the_one_the_commit_script_sets() -> None:
    # commit.lua: redis.call('SET', p .. ':sup:' .. a.rule, ...) with p = KEYS[i], the customer's key
    assert "p .. ':sup:' .. a.rule" in _scripts()["commit.lua"]
    key = keys.suppression("bank1", "C9", "pin_bruteforce")
    assert key == keys.customer("bank1", "C9") + ":sup:" + "pin_bruteforce" == "bank1:{C9}:sup:pin_bruteforce"


def test_each_namespace_keeps_its_keys_in_one_slot() -> None:
    def tag(key: str) -> str:
        return key[key.index("{") : key.index("}") + 1]

    desk, auth = keys.DeskKeys.of("b"), keys.AuthKeys.of("b")
    assert {tag(k) for k in (desk.alert("a1"), desk.audit("a1"), desk.groups, desk.seen, desk.by_time,
                             desk.sla, desk.backlog, desk.indexed, *(desk.index(d, "x{y}") for d in keys.INDEX_DIMS))
            } == {"{b:alerts}"}  # fmt: skip
    assert {
        tag(k)
        for k in (auth.users, auth.tokens, auth.token_used, auth.epochs, auth.session("x"), auth.tries("u:x"))
    } == {"{b:auth}"}
    assert {tag(k) for k in keys.RuleKeys.of("b").writes()} == {"{b}"}
    assert {tag(k) for k in keys.ModelKeys.of("b", "risk").all()} == {"{b:risk}"}
    assert {tag(keys.customer("b", "C1") + s) for s in keys.CUSTOMER_SUFFIXES} == {"{C1}"}
