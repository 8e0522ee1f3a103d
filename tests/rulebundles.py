"""Tiny rule bundles for version tests: every part of a decision names its bundle.

A bundle tagged ``old`` raises the alert ``marker_old`` on each login and answers with
the fallback ``fb_old``, so a decision that mixed two bundles would show it.
"""

from __future__ import annotations

from pathlib import Path

from engine.rules.pack import bundle_digest

CHANNELS = ("atm", "internet", "mobile", "branch", "call_centre")

_RISK = """kind: risk
rules:
  - id: marker_TAG
    severity: low
    when: event.type == "login"
    reason: "seen by TAG"
    action: allow
"""
_OFFERS = "kind: offers\nfallbacks:\n" + "".join(f"  {c}: {{id: fb_TAG, text: TAG}}\n" for c in CHANNELS)


def bundle(tag: str) -> dict[str, str]:
    """A valid bundle; ``tag`` is lower-case letters and digits."""
    return {"risk.yaml": _RISK.replace("TAG", tag), "offers.yaml": _OFFERS.replace("TAG", tag)}


def broken(tag: str) -> dict[str, str]:
    """A bundle that does not compile: ``rule marker_TAG: severity must be one of ...``."""
    files = bundle(tag)
    files["risk.yaml"] = files["risk.yaml"].replace("severity: low", "severity: huge")
    return files


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def version_of(n: int, files: dict[str, str]) -> str:
    return f"v{n}-{bundle_digest(files)}"
