"""A small rule bundle for unit tests of the decision logic (independent of the shipped
starter pack, which marketing and risk teams change)."""

from __future__ import annotations

from engine.decide.rulebook import load
from engine.rules.ruleset import RuleSet

CHANNELS = frozenset({"atm", "internet", "mobile", "branch", "call_centre"})
RISK = """
kind: risk
lists:
  watch_terminals: [T-BAD]
rules:
  - id: pin_bruteforce
    severity: high
    when: event.type == "pin_failure" && state.pin_failures_1h >= 3
    reason: "{state.pin_failures_1h} PIN failures in the last hour"
    action: block
    suppress: 1h
  - id: new_device_transfer
    severity: high
    when: [event.type == "transfer", state.new_device == 1, event.amount >= 1000.0]
    reason: "transfer of {event.amount:.2f} from a new device"
    action: review
  - id: watch_terminal
    severity: medium
    when: in_list("watch_terminals", event.terminal_id)
    reason: "terminal {event.terminal_id} is on the watch list"
    action: review
typologies:
  - id: takeover
    rules: {new_device_transfer: 0.6, watch_terminal: 0.4}
    review: 0.3
    block: 0.9
when_state_unavailable:
  default: step_up
  types: {pin_failure: block, transfer: step_up, withdrawal: step_up, login: step_up,
          balance_inquiry: allow, complaint: allow}
"""
OFFERS = """
kind: offers
contact_policy:
  per_offer: {max: 2, window: 7d}
  overall: {max: 3, window: 1d}
  decline_cooldown: 14d
offers:
  - id: complaint_follow_up
    kind: service
    value: 40
    channels: [atm, internet, mobile]
    treatments: {atm: "We are sorry", internet: "Banner: sorry", mobile: "Push: sorry"}
    applicability: event.type == "complaint"
  - id: credit_card_gold
    kind: offer
    name: Gold card
    value: 120
    levers: {campaign: 1.5}
    channels: [atm, internet, mobile]
    treatments: {atm: "Gold card", internet: "Banner: Gold card", mobile: "Push: Gold card"}
    eligibility: ['!("credit_card" in profile.products)', 'profile.income_band in ["high", "upper_middle"]']
    suitability: [state.open_alerts == 0, state.complaints_7d == 0, scores.fraud < 0.3]
    contact: {daily_cap: 2}
  - id: savings_boost
    kind: offer
    value: 35
    valid: {from: 2026-01-01, until: 2027-01-01}
    channels: [atm, internet, mobile]
    treatments: {atm: "Savings", internet: "Banner: savings", mobile: "Push: savings"}
    eligibility: '!("savings" in profile.products)'
    suitability: state.complaints_7d == 0
fallbacks:
  atm: {id: atm_default, text: Thank you.}
  internet: {id: internet_default, text: Security tips}
  mobile: {id: mobile_default, text: ""}
  branch: {id: branch_default, text: ""}
  call_centre: {id: call_centre_default, text: ""}
"""


def fixture_rules(version: str = "test-1") -> RuleSet:
    return load({"risk.yaml": RISK, "offers.yaml": OFFERS}, CHANNELS, version).rules
