"""The small built-in rule set used until rule packs (rules/, CEL) replace it.

It is deliberately modest: a handful of risk typologies banks see every day and a
few offers, enough to exercise every part of the pipeline.
"""

from __future__ import annotations

from typing import Any

from engine.rules import Context, Offer, RiskRule, RuleSet

VERSION = "builtin-1"
ALL_CHANNELS = frozenset({"atm", "internet", "mobile", "branch", "call_centre"})
DIGITAL = frozenset({"internet", "mobile"})


def _f(ctx: Context) -> dict[str, Any]:
    features: dict[str, Any] = ctx["features"]
    return features


def _products(ctx: Context) -> tuple[str, ...]:
    products: tuple[str, ...] = _f(ctx)["products"]
    return products


def _calm(ctx: Context) -> bool:
    """No sales offers to a customer under suspicion or who complained this week."""
    f = _f(ctx)
    return bool(f["open_alerts"] == 0 and f["complaints_7d"] == 0)


RISK_RULES = (
    RiskRule(
        "pin_bruteforce",
        "high",
        lambda c: _f(c)["type"] == "pin_failure" and _f(c)["pin_failures_1h"] >= 3,
        "{pin_failures_1h} PIN failures in the last hour",
        "block",
        0.6,
    ),
    RiskRule(
        "new_device_large_transfer",
        "high",
        lambda c: _f(c)["type"] == "transfer" and _f(c)["new_device"] == 1 and _f(c)["amount"] >= 1000,
        "transfer of {amount:.2f} from a device never seen before",
        "step_up",
        0.5,
    ),
    RiskRule(
        "impossible_travel",
        "critical",
        lambda c: _f(c)["speed_kmh"] > 900 and _f(c)["distance_km"] > 500,
        "{distance_km:.0f} km from the previous interaction, at {speed_kmh:.0f} km/h",
        "step_up",
        0.6,
    ),
    RiskRule(
        "amount_spike",
        "medium",
        lambda c: _f(c)["amount_ratio_30d"] >= 5 and _f(c)["amount"] >= 500,
        "amount {amount:.2f} is {amount_ratio_30d:.1f}x this customer's 30-day average",
        "review",
        0.3,
    ),
    RiskRule(
        "withdrawal_burst",
        "medium",
        lambda c: _f(c)["type"] == "withdrawal" and _f(c)["n_10m_type"] >= 4,
        "{n_10m_type} withdrawals in 10 minutes",
        "review",
        0.3,
    ),
)

OFFERS = (
    Offer(
        "complaint_follow_up",
        "service",
        "A named adviser calls back about the complaint",
        value=40.0,
        channels=ALL_CHANNELS,
        treatments={
            "atm": "We are sorry. An adviser will call you within 24 hours.",
            "internet": "Banner: your complaint is with a named adviser - track it here",
            "mobile": "Push: an adviser will call you back within 24 hours",
            "branch": "Offer a same-day call with the complaints team",
            "call_centre": "Transfer to the complaints team",
        },
        condition=lambda c: _f(c)["type"] == "complaint",
        max_per_7d=3,
    ),
    Offer(
        "mobile_app_adoption",
        "service",
        "Move routine banking to the mobile app",
        value=8.0,
        channels=frozenset({"atm", "internet"}),
        treatments={
            "atm": "Skip the queue: check balances in our mobile app",
            "internet": "Banner: get the mobile app - scan the QR code",
        },
        condition=lambda c: _calm(c) and _f(c)["n_30d_type"] >= 3 and _f(c)["type"] == "balance_inquiry",
    ),
    Offer(
        "credit_card_gold",
        "offer",
        "Gold credit card, no annual fee the first year",
        value=120.0,
        channels=ALL_CHANNELS,
        treatments={
            "atm": "Pre-approved: Gold card with no fee in year one. Ask in branch.",
            "internet": "Banner: your pre-approved Gold card - apply in 2 minutes",
            "mobile": "Push: you're pre-approved for a Gold card",
            "branch": "Customer is pre-approved for the Gold card",
            "call_centre": "Mention the pre-approved Gold card",
        },
        condition=lambda c: (
            _calm(c)
            and "credit_card" not in _products(c)
            and _f(c)["income_band"] in ("high", "upper_middle")
            and _f(c)["kyc_risk"] != "high"
        ),
    ),
    Offer(
        "savings_boost",
        "offer",
        "Savings account at a bonus rate",
        value=35.0,
        channels=ALL_CHANNELS,
        treatments={
            "atm": "Earn more: open a bonus-rate savings account today",
            "internet": "Banner: a bonus rate on savings, opened in one click",
            "mobile": "Push: put spare money to work at a bonus rate",
            "branch": "Suggest the bonus-rate savings account",
            "call_centre": "Mention the bonus-rate savings account",
        },
        condition=lambda c: (
            _calm(c)
            and "savings" not in _products(c)
            and _f(c)["type"] in ("deposit", "balance_inquiry", "login", "page_view")
        ),
    ),
    Offer(
        "retention_fee_waiver",
        "retention",
        "Waive the monthly fee for six months",
        value=60.0,
        channels=ALL_CHANNELS,
        treatments={
            "atm": "Good news: no account fee for the next 6 months",
            "internet": "Banner: we've waived your account fee for 6 months",
            "mobile": "Push: your account fee is waived for 6 months",
            "branch": "Offer the six-month fee waiver",
            "call_centre": "Offer the six-month fee waiver",
        },
        condition=lambda c: c["scores"]["churn"] >= 0.6 and _calm(c),
        lever=1.5,
    ),
)

FALLBACKS = {
    "atm": {"id": "atm_default", "text": "Thank you for banking with us."},
    "internet": {"id": "internet_default", "text": "Banner: security tips for online banking"},
    "mobile": {"id": "mobile_default", "text": "No message"},
    "branch": {"id": "branch_default", "text": "No suggestion"},
    "call_centre": {"id": "call_centre_default", "text": "No suggestion"},
}


def builtin_rules() -> RuleSet:
    return RuleSet(VERSION, RISK_RULES, OFFERS, FALLBACKS)
