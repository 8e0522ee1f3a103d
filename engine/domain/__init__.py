"""The bank's vocabulary as values: events, the customer snapshot, features, decisions,
contact policy, scores and labels. Pure: no I/O, no models."""
