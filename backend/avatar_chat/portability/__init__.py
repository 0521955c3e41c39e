"""Data portability: a user's whole account as one archive (GET /me/export), and such an
archive taken into an account (POST /me/import). docs/portability.md."""
