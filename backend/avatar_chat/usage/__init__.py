"""Usage and plans: what every model call cost (records), what a user spent against their
plan (GET /me/usage). The quotas themselves are enforced in Postgres (docs/usage.md)."""
