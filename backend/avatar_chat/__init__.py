"""Avatar chat backend: FastAPI over Supabase Postgres."""
