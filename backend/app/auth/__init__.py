"""Supabase access-token verification."""
