"""Where the demo's simulated customers are: home regions, usual places, commutes and trips.

Each customer lives in a home region (a UK city), with a home, often a workplace and one
or two usual places (shops, the gym, family) a few kilometres apart, each with the ATM
they use there. A customer's whereabouts are a pure function of the population's seed,
the customer and the time: every UTC day is a list of legs, each a stay at a place or a
move from one point to another at a plausible speed (25 km/h in town, 40 to and from an
airport, 130 by train, a plane's gate-to-gate speed, below 850 km/h, with time at the
airports), and a few customers a week go on a trip (another UK city, or abroad by plane,
for one to four nights at a hotel). So no two of a customer's located events can be
further apart than a traveller could go in the time between them.

>>> town = Town(50, seed=1)
>>> c = town.customers[0]
>>> where(c, 1796300000.0).mode in ("stay", "ground", "train", "air")
True
>>> all(0 < leg.t1 - leg.t0 for leg in day_legs(c, 20790))
True
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
import random
from dataclasses import dataclass, field
from typing import Any

from engine.domain.features import haversine_km

DAY = 86400.0
# city: (lat, lon, terminal code, share of customers living there)
REGIONS = {
    "london": (51.5074, -0.1278, "LON", 0.40),
    "manchester": (53.4808, -2.2426, "MAN", 0.15),
    "birmingham": (52.4862, -1.8904, "BHM", 0.12),
    "leeds": (53.8008, -1.5491, "LDS", 0.10),
    "bristol": (51.4545, -2.5879, "BRS", 0.08),
    "edinburgh": (55.9533, -3.1883, "EDI", 0.08),
    "glasgow": (55.8642, -4.2518, "GLA", 0.07),
}
# Trips abroad: (lat, lon, terminal code, currency)
ABROAD = {
    "paris": (48.8566, 2.3522, "PAR", "EUR"),
    "amsterdam": (52.3676, 4.9041, "AMS", "EUR"),
    "dublin": (53.3498, -6.2603, "DUB", "EUR"),
    "madrid": (40.4168, -3.7038, "MAD", "EUR"),
    "barcelona": (41.3874, 2.1686, "BCN", "EUR"),
    "new_york": (40.7128, -74.0060, "NYC", "USD"),
}
SPEED_KMH = {"ground": 25.0, "airport_road": 40.0, "train": 130.0}
MAX_CRUISE_KMH = 850.0  # a plane's gate-to-gate speed stays below this (taxi, climb, descent)


@dataclass(frozen=True)
class Place:
    name: str
    lat: float
    lon: float
    terminal: str  # the ATM the customer uses there
    currency: str = "GBP"

    @property
    def point(self) -> tuple[float, float]:
        return (self.lat, self.lon)


@dataclass(frozen=True, eq=False)
class Customer:
    customer_id: str
    seed: int
    home_city: str
    home: Place
    work: Place | None
    usual: tuple[Place, ...]
    devices: tuple[str, ...]  # the phone first; a computer for internet banking
    channels: dict[str, float]  # the customer's own mix of mobile, internet, atm
    habits: dict[str, float]  # usual amounts by event type
    travel: float  # chance of a trip in a given week
    profile: dict[str, Any]


@dataclass(frozen=True)
class Leg:
    t0: float
    t1: float
    a: tuple[float, float]
    b: tuple[float, float]
    mode: str  # stay, ground, train, air
    place: Place | None = None  # where a stay is


@dataclass(frozen=True)
class Whereabouts:
    lat: float
    lon: float
    mode: str
    place: Place | None


@dataclass
class Town:
    """The simulated customers: ids ``<prefix><index>``, activity from a log-normal (a few
    customers are busier than most, none by orders of magnitude)."""

    size: int
    seed: int = 7
    prefix: str = "C"
    customers: list[Customer] = field(init=False)
    _cum: list[float] = field(init=False)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        self.customers = [_customer(f"{self.prefix}{i:06d}", self.seed, rng) for i in range(self.size)]
        self._cum = list(itertools.accumulate(rng.lognormvariate(0.0, 0.8) for _ in range(self.size)))

    def pick(self, rng: random.Random) -> Customer:
        return self.customers[bisect.bisect_left(self._cum, rng.random() * self._cum[-1])]

    def profile(self, customer_id: str) -> dict[str, Any]:
        return self.customers[int(customer_id[len(self.prefix) :])].profile


def _near(lat: float, lon: float, km: float, rng: random.Random) -> tuple[float, float]:
    """A point within ``km`` of (lat, lon), rounded to about a metre."""
    r, angle = km * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
    dlat = r * math.cos(angle) / 111.2
    dlon = r * math.sin(angle) / (111.2 * math.cos(math.radians(lat)))
    return round(lat + dlat, 5), round(lon + dlon, 5)


def _place(name: str, centre: tuple[float, float], km: float, code: str, rng: random.Random,
           currency: str = "GBP") -> Place:  # fmt: skip
    # Terminal numbers 100-899: the starter pack's watch-listed terminals (013, 027) are
    # where the planted skimming scenario happens, never an ordinary customer's ATM.
    return Place(name, *_near(*centre, km, rng), f"ATM-{code}-{rng.randint(100, 899)}", currency)


def _customer(cid: str, seed: int, rng: random.Random) -> Customer:
    city = rng.choices(list(REGIONS), [r[3] for r in REGIONS.values()])[0]
    lat, lon, code, _ = REGIONS[city]
    home = _place("home", (lat, lon), 9.0, code, rng)
    work = _place("work", (lat, lon), 5.0, code, rng) if rng.random() < 0.75 else None
    usual = tuple(_place(f"usual{j}", home.point, 4.0, code, rng) for j in range(rng.randint(1, 2)))
    segment = rng.choice(["mass", "mass", "affluent", "private", "young"])
    app = {"young": 0.8, "mass": 0.55, "affluent": 0.5, "private": 0.4}[segment] * rng.uniform(0.7, 1.2)
    atm = rng.uniform(0.1, 0.35)
    channels = {"mobile": app, "internet": max(0.05, 1.0 - app - atm), "atm": atm}
    devices = (f"{cid}-phone", f"{cid}-pc")
    products = ["current", "debit_card"] + [
        p for p in ("savings", "credit_card", "mortgage") if rng.random() < 0.35
    ]
    if rng.random() < 0.5:
        products.append("mobile_app")
    income = rng.choice(["low", "middle", "upper_middle", "high"])
    profile: dict[str, Any] = {
        "segment": segment,
        "age_band": "18-25" if segment == "young" else rng.choice(["26-40", "41-60", "60+"]),
        "income_band": income,
        "kyc_risk": rng.choices(["low", "medium", "high"], [0.8, 0.17, 0.03])[0],
        "products": products,
        "timezone": "Europe/London",
        "tenure_months": rng.randint(1, 240),
        "home_geo": {"lat": home.lat, "lon": home.lon},
        "home_currency": "GBP",
    }
    if income in ("upper_middle", "high") or segment in ("affluent", "private"):
        profile["idle_balance"] = round(rng.uniform(2000, 40000), -2)
    if rng.random() < 0.3:
        profile["preapproved_loan_limit"] = rng.choice([1000, 2500, 5000, 10000])
    habits = {
        "withdrawal": float(rng.choice([20, 40, 50, 60, 80, 100, 150, 200])),
        "transfer": rng.uniform(40, 400),
        "bill_payment": rng.uniform(25, 150),
        "card_payment": rng.uniform(8, 60),
        "deposit": rng.uniform(50, 600),
    }
    travel = rng.uniform(0.01, 0.12) * (2.0 if segment in ("affluent", "private") else 1.0)
    return Customer(cid, seed, city, home, work, usual, devices, channels, habits, travel, profile)


# ------------------------------------------------------------------------ the day's legs


def _rng(c: Customer, *key: object) -> random.Random:
    return random.Random(":".join(map(str, (c.seed, c.customer_id, *key))))  # str seeds: stable


@dataclass(frozen=True)
class Trip:
    depart_day: int
    return_day: int
    hotel: Place
    depart_h: float
    return_h: float


def trip_of(c: Customer, week: int) -> Trip | None:
    """The customer's trip in this week (weeks of 7 UTC days from the epoch), if any."""
    rng = _rng(c, "trip", week)
    if rng.random() >= c.travel:
        return None
    if rng.random() < 0.5:
        dest = rng.choice([k for k in REGIONS if k != c.home_city])
        lat, lon, code, _ = REGIONS[dest]
        currency = "GBP"
    else:
        dest = rng.choice(list(ABROAD))
        lat, lon, code, currency = ABROAD[dest]
    nights = rng.randint(1, 4)
    first = week * 7 + rng.randint(0, 6 - nights)
    hotel = _place(f"hotel:{dest}", (lat, lon), 3.0, code, rng, currency)
    return Trip(first, first + nights, hotel, rng.uniform(7.0, 12.0), rng.uniform(8.0, 12.0))


def _hub(p: tuple[float, float]) -> tuple[float, float]:
    """The airport or station serving a city: a fixed point about 18 km from its centre."""
    return (round(p[0] - 0.12, 5), round(p[1] + 0.15, 5))


def _hub_terminal(p: tuple[float, float]) -> str:
    return f"ATM-HUB-{int(abs(p[0] * 977 + p[1] * 613)) % 800 + 100}"


class _Plan:
    def __init__(self, start: float, at: Place) -> None:
        self.legs: list[Leg] = []
        self.t, self.at, self.point = start, at, at.point

    def stay_until(self, t: float) -> None:
        if t > self.t:
            self.legs.append(Leg(self.t, t, self.point, self.point, "stay", self.at))
            self.t = t

    def move(self, to: tuple[float, float], mode: str, at: Place | None) -> None:
        km = haversine_km(*self.point, *to)
        # a plane: taxi, climb and descent keep it below cruise speed; else a few minutes at least
        hours = km / MAX_CRUISE_KMH + 0.6 if mode == "air" else max(km / SPEED_KMH[mode], 5 / 60)
        self.legs.append(Leg(self.t, self.t + hours * 3600, self.point, to, mode))
        self.t += hours * 3600
        self.point, self.at = to, at  # type: ignore[assignment]

    def go(self, place: Place, mode: str = "ground") -> None:
        self.move(place.point, mode, place)

    def journey(self, src: tuple[float, float], dst: tuple[float, float], end: Place) -> None:
        """Door to door between cities: to the hub, wait, train or plane, hub, onwards."""
        far = haversine_km(*src, *dst) > 450
        a, b = _hub(src), _hub(dst)
        hub_a = Place("hub", *a, _hub_terminal(a))
        hub_b = Place("hub", *b, _hub_terminal(b), end.currency)
        self.move(a, "airport_road", hub_a)
        self.stay_until(self.t + (5400 if far else 1200))
        self.move(b, "air" if far else "train", hub_b)
        self.stay_until(self.t + (2400 if far else 300))
        self.move(end.point, "airport_road", end)


@functools.lru_cache(maxsize=65536)
def day_legs(c: Customer, day: int) -> tuple[Leg, ...]:
    """The customer's legs on this UTC day: contiguous, from 00:00 to 24:00."""
    start, end = day * DAY, (day + 1) * DAY
    trip = trip_of(c, day // 7)
    rng = _rng(c, "day", day)
    if trip is not None and trip.depart_day <= day <= trip.return_day:
        plan = _Plan(start, c.home if day == trip.depart_day else trip.hotel)
        if day == trip.depart_day:
            plan.stay_until(start + trip.depart_h * 3600)
            plan.journey(c.home.point, trip.hotel.point, trip.hotel)
        if day == trip.return_day:
            plan.stay_until(start + trip.return_h * 3600)
            plan.journey(trip.hotel.point, c.home.point, c.home)
    else:
        plan = _Plan(start, c.home)
        weekday = (day + 3) % 7 < 5  # 1 January 1970 was a Thursday
        if weekday and c.work is not None and rng.random() < 0.9:
            plan.stay_until(start + rng.uniform(7.0, 9.0) * 3600)
            plan.go(c.work)
            plan.stay_until(start + rng.uniform(16.5, 18.5) * 3600)
            if rng.random() < 0.3:
                plan.go(rng.choice(c.usual))
                plan.stay_until(plan.t + rng.uniform(0.5, 1.5) * 3600)
            plan.go(c.home)
        elif rng.random() < 0.6:
            plan.stay_until(start + rng.uniform(10.0, 15.0) * 3600)
            plan.go(rng.choice(c.usual))
            plan.stay_until(plan.t + rng.uniform(1.0, 3.0) * 3600)
            plan.go(c.home)
    plan.stay_until(end)
    return tuple(plan.legs)


def where(c: Customer, t: float) -> Whereabouts:
    """Where the customer is at time ``t``: at a place, or on the way (along the great circle)."""
    legs = day_legs(c, int(t // DAY))
    leg = legs[max(0, bisect.bisect_right([x.t0 for x in legs], t) - 1)]
    if leg.mode == "stay":
        return Whereabouts(leg.a[0], leg.a[1], "stay", leg.place)
    lat, lon = between(leg.a, leg.b, (t - leg.t0) / (leg.t1 - leg.t0))
    return Whereabouts(lat, lon, leg.mode, None)


def between(a: tuple[float, float], b: tuple[float, float], f: float) -> tuple[float, float]:
    """The point a fraction ``f`` of the way from a to b along the great circle.

    >>> between((51.5, -0.13), (40.71, -74.0), 0.0), between((1.0, 2.0), (1.0, 2.0), 0.5)
    ((51.5, -0.13), (1.0, 2.0))
    """
    if f <= 0.0 or a == b:
        return a
    la1, lo1, la2, lo2 = map(math.radians, (*a, *b))
    p = (math.cos(la1) * math.cos(lo1), math.cos(la1) * math.sin(lo1), math.sin(la1))
    q = (math.cos(la2) * math.cos(lo2), math.cos(la2) * math.sin(lo2), math.sin(la2))
    omega = math.acos(max(-1.0, min(1.0, sum(x * y for x, y in zip(p, q, strict=True)))))
    if omega < 1e-12:
        return a
    k1, k2 = math.sin((1 - f) * omega) / math.sin(omega), math.sin(f * omega) / math.sin(omega)
    x, y, z = (k1 * u + k2 * v for u, v in zip(p, q, strict=True))
    return math.degrees(math.atan2(z, math.hypot(x, y))), math.degrees(math.atan2(y, x))
