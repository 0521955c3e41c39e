"""Moderation: one interface (`Moderator`), three providers.

- `offline.OfflineModerator`: the default, no network; a documented rule-based classifier
  for self-harm and suicidal ideation and for sexual content.
- `openai_moderation.OpenAIModerator`: `POST {base_url}/moderations` (OpenAI's
  omni-moderation, or any server speaking that API).
- `llama_guard.LlamaGuardModerator`: a Llama Guard 3/4 model behind any OpenAI-compatible
  `/chat/completions` endpoint, its S-codes mapped onto the same category names.

Every provider answers a `ModerationResult` in OpenAI's category names, or raises
`ModerationUnavailable`; what to do then (fail open or closed) is the caller's choice.
This package is a library: nothing here knows of settings, HTTP routes or the chat turn.
"""
