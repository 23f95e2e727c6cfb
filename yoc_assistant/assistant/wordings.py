"""What a request's words say about it, before any model reads them.

* `asks_for_description(text)`: the usual wordings of "what is in this photo?". A
  backbone that was trained on one captioning prompt (config.json `yoc_caption_prompt`,
  as the embedded toy backbone is) gets that prompt instead of the user's wording; a
  large model reads any wording and gets the user's.
* `unknown_words(backbone, text)`: the words the backbone's tokenizer has no token for
  (read from the loaded tokenizer's vocabulary: a word-level tokenizer maps them to its
  unknown token; a byte-level one has none, so nothing is ever unknown to it).
"""

from __future__ import annotations

import re
from typing import Any

from yoc_assistant.assistant.mentions import Mentions, parsed

_DESCRIBE = re.compile(
    r"""^\s*(?:please\s+|can\s+you\s+|could\s+you\s+)?(?:
        (?:describe|caption)\b
      | what(?:'s|\s+is|\s+are)\s+(?:in|on|shown\s+in)\s+(?:this|the|my)\s+(?:photo|picture|image|pic|shot)\b
      | what(?:'s|\s+is)\s+(?:this|that|here)\s*[?.!]*\s*$
      | what\s+(?:do|can)\s+you\s+see\b
      | what\s+does\s+(?:this|the)\s+(?:photo|picture|image)\s+show\b
      | tell\s+me\s+(?:about|what(?:'s|\s+is)\s+in)\s+(?:this|the)\s+(?:photo|picture|image)\b
    )""", re.IGNORECASE | re.VERBOSE)


def asks_for_description(text: str | Mentions) -> bool:
    """Whether `text` asks what an attached photo shows (and names no concept)."""
    mentions = parsed(text)
    return not mentions.found and bool(_DESCRIBE.match(mentions.text))


def unknown_words(backbone: Any, text: str | Mentions) -> list[str]:
    """Distinct words of `text` (outside `<name>` mentions) the tokenizer cannot spell."""
    tokenizer = backbone.tokenizer
    unk = getattr(tokenizer, "unk_token_id", None)
    mentions = parsed(text)
    if unk is None or not mentions.text:
        return []
    plain = mentions.text
    for mention in reversed(mentions.found):
        plain = plain[:mention.start] + " " + plain[mention.end:]
    encoded = tokenizer(plain, add_special_tokens=False, return_offsets_mapping=True)
    found: dict[str, str] = {}
    for tok, (start, end) in zip(encoded["input_ids"], encoded["offset_mapping"], strict=True):
        if tok == unk:
            word = plain[start:end]
            found.setdefault(word.lower(), word)
    return list(found.values())
