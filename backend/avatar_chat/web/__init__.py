"""The web client: static files at /app, its configuration and the local dev sign-in."""
