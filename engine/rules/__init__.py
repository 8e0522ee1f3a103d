"""Rules as data: the CEL environment, the typed rule set, and rule packs validated at load.
Pure: evaluation returns what matched and why, and performs no side effects."""
