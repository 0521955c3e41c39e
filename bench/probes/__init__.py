"""In-process measurements a scenario runs in a process of its own."""
