"""In-process: what the offline moderation of one chat turn costs the API, in
microseconds, with nothing else around it: the user's message checked
(`Moderation.check`, direction in), then the reply's chunks through `ReplyCheck.add` as
`chat.generation` feeds them (the check every MODERATION_OUTPUT_CHECK_CHARS characters),
`finish` (what is left) and `outcome`; less the same loop over the chunks without
moderation (MODERATION_PROVIDER=none: no check object). The texts are
`bench.harness.chat_texts`' (a message of ~200 characters, a reply of ~1,060 characters
in one-word chunks), the settings the defaults, the metrics on, in multiprocess mode as
`avatar-chat serve` runs the API when PROMETHEUS_MULTIPROC_DIR is set.
`bench.scenarios.moderation_cost` runs it in a subprocess with that set; alone:

    PROMETHEUS_MULTIPROC_DIR=$(mktemp -d) .venv/bin/python -m bench.probes.moderation_cpu [--turns 2000]

Prints one JSON object: the best of `--repeats` runs, us per turn (`with`, `without`,
`added`), and per turn the offline classifier's calls, the characters they read and its
own time (`classify_us`).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import uvloop

from avatar_chat.chat.moderation import Moderation, ModerationMetrics, SafetyPolicy, create_moderator
from avatar_chat.core.metrics import Metrics, multiprocess_dir
from avatar_chat.core.settings import ModerationProviderName, Settings
from avatar_chat.safety import offline
from bench.harness.chat_texts import MESSAGES, REPLY_CHUNKS


async def _with(moderation: Moderation, turns: int) -> float:
    """us per turn: the turn's moderation as the API runs it."""
    started = time.process_time()
    for i in range(turns):
        await moderation.check(MESSAGES[i % len(MESSAGES)], "in")
        check = moderation.reply_check(minor=False)
        out = []
        for chunk in REPLY_CHUNKS:
            if check is not None:  # as chat.generation feeds it
                taken = check.take(chunk)
                chunk = await check.checked() if taken is None else taken
                if check.flagged is not None:
                    break
            if chunk:
                out.append(chunk)
        if check is not None and check.flagged is None:
            rest = await check.finish()
            if rest:
                out.append(rest)
        if check is not None:
            check.finished()
        if "".join(out) != "".join(REPLY_CHUNKS):
            raise RuntimeError("the reply did not come through whole")
    return (time.process_time() - started) / turns * 1e6


def _classify_calls(moderation: Moderation) -> tuple[list[int], float]:
    """The classifier's calls in one turn (characters each) and its time per turn (us)."""
    sizes: list[int] = []
    spent = 0.0
    classify = offline.classify

    def counted(text: str) -> frozenset[str]:
        nonlocal spent
        started = time.process_time()
        try:
            return classify(text)
        finally:
            spent += time.process_time() - started
            sizes.append(len(text))

    offline.classify = counted
    try:
        uvloop.run(_with(moderation, 1))
        sizes.clear()
        spent = 0.0
        uvloop.run(_with(moderation, 200))
    finally:
        offline.classify = classify
    return sizes[: len(sizes) // 200], spent / 200 * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.probes.moderation_cpu", description=__doc__)
    parser.add_argument("--turns", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    metrics = ModerationMetrics.registered(Metrics(enabled=True))
    variants: dict[str, Moderation] = {}
    for name, provider in (
        ("with", ModerationProviderName.offline),
        ("without", ModerationProviderName.none),
    ):
        settings = Settings(_env_file=None, moderation_provider=provider)
        variants[name] = Moderation(create_moderator(settings), SafetyPolicy.from_settings(settings), metrics)
    best: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, moderation in variants.items():
            us = uvloop.run(_with(moderation, args.turns))
            best[name] = min(best.get(name, us), us)
    sizes, classify_us = _classify_calls(variants["with"])
    result: dict[str, Any] = {
        "us_per_turn": {**best, "added": best["with"] - best["without"]},
        "classify_calls": len(sizes),
        "classify_chars": sizes,
        "classify_us": classify_us,
        "message_chars": [len(m) for m in MESSAGES],
        "reply_chars": len("".join(REPLY_CHUNKS)),
        "reply_chunks": len(REPLY_CHUNKS),
        "output_check_chars": variants["with"].policy.output_check_chars,
        "multiprocess": multiprocess_dir() is not None,
        "turns": args.turns,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
