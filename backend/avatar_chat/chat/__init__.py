"""Chat: a turn (send, regenerate, edit), its streamed reply, resume and stop.

How a turn flows through the modules:

1. `router` reads the HTTP request (JSON or SSE, Idempotency-Key) and takes this
   worker's `ChatService` from `dependencies`; it only routes.
2. `service.ChatService` is the facade that says the order. The turn runs in a tracked
   background task, so its reply is saved even when the client goes away.
3. `admission` commits the user's message and a placeholder reply in one round trip
   (`repository.begin_turn` or `begin_regenerate`) and turns the answer, with the persona
   and the window the SessionStore holds at the versions it reports (G1), into a
   `turn.Turn` (what the router answers with) and a `plan.TurnPlan` (what the rest of the
   turn follows); a replayed Idempotency-Key gets the saved exchange and no plan.
4. `generation` builds the prompt (`prompt`, from `memory`'s window and summary), streams
   the provider's reply into the Turn within the turn deadline, saves its text as it grows
   while someone follows it (`progress`, told by `demand`), and settles it in one round
   trip (`repository.finish_turn`).
5. `memory`, once the reply has committed (G4), caches the new window and starts the
   summary as a tracked task.

Beside the turn: `follow` serves a reply to a client that (re)connects, on any worker,
and stops it, every follower of a reply on a worker sharing one reader (`watch`);
`demand` is this worker's registry of the replies it generates and its one statement that
renews their leases and learns which of them someone follows or asked to stop; `streams`
caps the SSE streams a user holds open on a worker; `events` is the SSE protocol of both
streams (event names, the `<attempt>:<offset>` ids, encoding, the error event, their
OpenAPI schemas); `metrics` holds what chat counts.

Where a new step plugs in:

- A safety check of the user's message before the model is called (moderation in): a
  module of its own, called by `ChatService._run` between admission and generation (the
  message is committed, the model not yet asked); a refused message settles the
  placeholder reply through `generation` with its own code, and the client hears it as
  the turn's `error`.
- A check of the streamed reply (moderation out): in `ReplyGenerator._produce`, on the
  text before `turn.push(chunk)` hands it to the client; a flagged reply ends the draft
  the way a stop does, with its own code.
- A usage charge after the reply settles: in `ReplyGenerator.run`, once `finish_turn` has
  saved the reply (beside `Memory.after_commit`); a charge written to the database rides
  in `finish_turn`'s own round trip, so a turn stays at two.
"""
