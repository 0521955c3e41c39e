"""Operations tooling, apart from the request path: where the database is (`runtime`: the
configured one, or the embedded server of `embedded`), migrating it (`migrate`, with the
Supabase CLI's statement splitter in `sqlsplit` and the local Supabase pieces in
`sql/supabase_local.sql`), per-machine secret files (`secret_files`) and the workers'
liveness rows (`workers`)."""
