"""The comparison apps the scenarios serve under uvicorn beside the API: `hello` (hello
world), `floor` (the database floor), `bare` (the API without its outermost layer)."""
