"""Process plumbing: embedded Redis and broker, the process launcher, synthetic traffic."""
