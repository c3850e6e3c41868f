"""Text that both databases can store: what every string from outside must be.

PostgreSQL's `text` cannot hold NUL (U+0000), and no UTF-8 encoding exists
for a lone UTF-16 surrogate (U+D800..U+DFFF): JSON can escape one
(`"\\ud800"`) and Python decodes it, but the driver fails deep inside a
query. Strings are checked where they enter (request bodies, GraphQL
literals, JWT claims, GitHub's answers), so nothing behind those points
has to care.
"""

from __future__ import annotations

import re

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

UNSTORABLE_TEXT = "NUL characters or unpaired UTF-16 surrogates"


def is_storable(text: str) -> bool:
    """Whether PostgreSQL and SQLite can both store `text` as it is."""
    return _UNSTORABLE.search(text) is None
