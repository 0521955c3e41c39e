"""Programs run from the command line rather than by pytest: the suite once per PostgreSQL
major (`python -m tests.runners.majors`), the long soak (`python -m tests.runners.soak`),
the image decode memory table (`python -m tests.runners.decode_memory`)."""
