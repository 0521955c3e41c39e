"""Chat texts of realistic length for the benchmarks that need them (moderation): the
messages a user types and a model's reply of about 1,000 characters. None is flagged by
the offline moderator (`moderation_cost` checks that before measuring); a few hold its key
words in everyday use ("teach myself", "battery is dead", "yourself"), so some of its
rules' regexes run, as they would on real chat."""

from __future__ import annotations

from typing import Final

MESSAGES: Final = (
    "I have a big presentation at work tomorrow and I also had an argument with my sister this"
    " evening about the holidays. I cooked dinner and went for a run but I still can't switch off."
    " Any advice on how to calm down and get some sleep?",
    "My phone battery is dead again and I missed the bus, so I walked home in the rain. Honestly"
    " this week is killing me. Can you cheer me up with something nice to look forward to this"
    " weekend?",
    "I've been trying to teach myself to cook Thai food. Yesterday I burned the rice and nearly set"
    " off the smoke alarm. What is a simple curry I could make with chicken, coconut milk and"
    " whatever vegetables are left in the fridge?",
    "We are planning a trip to Lisbon in May with two friends and none of us has been before. What"
    " should we not miss, and is it worth a day trip to Sintra, or would we spend most of the day"
    " on the train?",
)

REPLY: Final = (
    "That sounds like a lot to carry at once, so let's take it one piece at a time. First, the"
    " presentation: you have already done the hardest part, which is knowing your material better"
    " than anyone else in the room. Try rehearsing it out loud once tonight, timing yourself, and"
    " then stop; going over it again and again at midnight usually makes people more nervous, not"
    " less. Second, the argument with your sister. It is clear you care about her, otherwise it"
    " would not still be on your mind. You could send her a short message tomorrow saying you are"
    " sorry it got heated and that you would like to talk at the weekend, without re-opening the"
    " whole thing by text. Third, give yourself some credit: you cooked dinner, went for a run and"
    " still found time to plan your week, which is more than most people manage. If you want, we"
    " can write down three small things for tomorrow morning, something easy to start with,"
    " something important, and something just for you, like that walk by the river you mentioned."
    " How does that sound? I'm here if you want to talk it through."
)

# The reply as a model streams it (bench.apps.fake_model with `--text-file` holding REPLY and
# `--chunks` this many): a word and a space a chunk, as tokens come.
REPLY_CHUNKS: Final = tuple(word + " " for word in REPLY.split(" "))
