"""Object storage for avatar images: Supabase Storage, or a local directory (embedded)."""
