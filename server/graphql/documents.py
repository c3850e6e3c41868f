"""Documents parsed and validated once per schema, kept by their text.

A frontend or a worker sends the same few documents over and over; each is
parsed, counted against the document budget and validated the first time,
and the outcome is kept here. Strawberry's path (the parser and validation
extensions in server.graphql.schema) fills and reads this cache, and the
lean path (server.graphql.lean) answers from it a document that validated.

Only texts up to CACHED_DOCUMENT_CHARS are kept: the operations of a
frontend or a worker are a few hundred characters, GraphiQL's introspection
query is 1.6k. A document's syntax tree takes about 350 bytes per token, so
caching what an attacker can send (64 KiB, thousands of tokens, a new text
each time) would hold hundreds of megabytes and make every full garbage
collection of the process pause for 100 ms and more.

The entries are keyed by the text alone, not by the syntax tree:
graphql-core's nodes are frozen dataclasses whose hash walks the whole tree,
which a cache keyed by the tree would pay on every request.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from graphql import ASTValidationRule, DocumentNode, GraphQLError, GraphQLSchema, parse

CACHED_DOCUMENT_CHARS = 2048
CACHE_SIZE = 256

Rules = tuple[type[ASTValidationRule], ...]
Validate = Callable[[GraphQLSchema, DocumentNode, Rules], list[GraphQLError]]


@dataclass
class _Entry:
    document: DocumentNode
    # The rules it was validated with and what they found; None until validated.
    rules: Rules | None = None
    errors: list[GraphQLError] | None = None


class DocumentCache:
    """The parsed and validated documents of one schema, least recently used dropped first."""

    def __init__(self, *, max_tokens: int, size: int = CACHE_SIZE) -> None:
        self.max_tokens = max_tokens
        self.size = size
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def parse(self, text: str) -> DocumentNode:
        """The syntax tree of `text`; raises graphql-core's GraphQLError for a syntax error."""
        entry = self._entry(text)
        if entry is not None:
            return entry.document
        document = parse(text, max_tokens=self.max_tokens)
        if self.size > 0 and len(text) <= CACHED_DOCUMENT_CHARS:
            self._entries[text] = _Entry(document)
            if len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return document

    def validate(
        self, schema: GraphQLSchema, document: DocumentNode, rules: Rules, validate: Validate
    ) -> list[GraphQLError]:
        """`validate(schema, document, rules)`, once per kept document and rules."""
        entry = self._entry(document.loc.source.body) if document.loc is not None else None
        if entry is None or entry.document is not document:
            return validate(schema, document, rules)
        if entry.errors is None or entry.rules != rules:
            entry.errors = validate(schema, document, rules)
            entry.rules = rules
        return entry.errors

    def valid(self, text: str, rules: Rules) -> DocumentNode | None:
        """The kept syntax tree of `text` when it validated against `rules` without an error."""
        entry = self._entry(text)
        if entry is None or entry.errors != [] or entry.rules != rules:
            return None
        return entry.document

    def _entry(self, text: str) -> _Entry | None:
        entry = self._entries.get(text)
        if entry is not None:
            self._entries.move_to_end(text)
        return entry
