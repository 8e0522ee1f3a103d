"""Where HTTP is handled: the decision and alert APIs, auth guard, rate limits, webhooks
and the risk officers' console."""
