"""What a document may ask for, counted before graphql-core validates it.

graphql-core's validation is not linear in the document: "overlapping fields
can be merged" compares every pair of fields that share a response name in
one selection set (fragments included), and one error per repeated directive
makes a flood of errors. So a few things that are cheap to count are counted
first, in one pass over the parsed document, and a document over a limit is
refused with one error naming that limit; only documents within every limit
reach the expensive rules. The limits follow GraphQL Armor's max-directives
and cost-limit plugins:

- selections: fields, fragment spreads and inline fragments written in the
  document (Armor's max-tokens/max-aliases family, at the AST level);
- fragment spreads: graphql-core compares the fields of every pair of
  fragments spread into one selection set;
- cost: fields the document selects once every fragment is expanded, so a
  handful of fragments spread into each other cannot multiply into thousands;
- repeats: how often one response name occurs in one selection set once its
  fragments are expanded, which is what makes the overlap check quadratic;
- directives: how many in the document, and none repeated on one location.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from graphql import (
    DirectiveNode,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    Node,
    OperationDefinitionNode,
    SelectionSetNode,
)

from server.config import GraphQLLimits
from server.domain.enums import RequestErrorCode

# Far past the depth limit (inline fragments nest without adding depth, and
# the depth rule reports more helpfully); it keeps the recursive expansion
# below well within Python's stack.
MAX_NESTING = 64


class OverBudget(Exception):
    """A document over one limit; its message names the limit."""


@dataclass(frozen=True)
class _Totals:
    """Per selection set, with fragments expanded: fields, and fields per response name."""

    cost: int
    names: Counter[str]


def _walk(node: Node) -> Iterator[tuple[Node, int]]:
    """Every node under `node` with its selection-set nesting, without recursing."""
    pending = [(node, 0)]
    while pending:
        current, nesting = pending.pop()
        yield current, nesting
        if isinstance(current, SelectionSetNode):
            nesting += 1
        for key in current.keys:
            value = getattr(current, key, None)
            if isinstance(value, Node):
                pending.append((value, nesting))
            elif isinstance(value, tuple | list):
                pending.extend((item, nesting) for item in value if isinstance(item, Node))


class DocumentBudget:
    def __init__(self, limits: GraphQLLimits) -> None:
        self.limits = limits

    def check(self, document: DocumentNode) -> GraphQLError | None:
        """None when `document` is within every limit, else the one error to answer with."""
        try:
            self._count_nodes(document)
            self._count_expanded(document)
        except OverBudget as exc:
            return GraphQLError(
                str(exc), extensions={"code": RequestErrorCode.QUERY_TOO_COMPLEX.value}
            )
        return None

    def _count_nodes(self, document: DocumentNode) -> None:
        limits = self.limits
        selections = spreads = directives = 0
        for node, nesting in _walk(document):
            if nesting > MAX_NESTING:
                raise OverBudget(
                    f"The document nests selections more than {MAX_NESTING} levels deep; "
                    "that is the limit."
                )
            if isinstance(node, FragmentSpreadNode):
                spreads += 1
                if spreads > limits.max_fragment_spreads:
                    raise OverBudget(
                        f"The document spreads fragments more than {limits.max_fragment_spreads} "
                        "times; that is the limit."
                    )
            if isinstance(node, FieldNode | FragmentSpreadNode | InlineFragmentNode):
                selections += 1
                if selections > limits.max_selections:
                    raise OverBudget(
                        f"The document has more than {limits.max_selections} selections "
                        "(fields and fragments); that is the limit."
                    )
            node_directives: Sequence[DirectiveNode] = getattr(node, "directives", None) or ()
            directives += len(node_directives)
            if directives > limits.max_directives:
                raise OverBudget(
                    f"The document uses more than {limits.max_directives} directives; "
                    "that is the limit."
                )
            names = Counter(directive.name.value for directive in node_directives)
            repeated = [name for name, count in names.items() if count > 1]
            if repeated:
                raise OverBudget(
                    f"The directive @{repeated[0]} is repeated on one location; "
                    "a directive may be used once per location."
                )

    def _count_expanded(self, document: DocumentNode) -> None:
        fragments = {
            definition.name.value: definition
            for definition in document.definitions
            if isinstance(definition, FragmentDefinitionNode)
        }
        expanded: dict[str, _Totals] = {}
        in_progress: set[str] = set()

        def totals(selection_set: SelectionSetNode | None) -> _Totals:
            cost, names = 0, Counter[str]()
            for selection in selection_set.selections if selection_set else ():
                if isinstance(selection, FieldNode):
                    name = (selection.alias or selection.name).value
                    names[name] += 1
                    cost += 1 + self._within(totals(selection.selection_set)).cost
                    continue
                if isinstance(selection, InlineFragmentNode):
                    inner = totals(selection.selection_set)
                elif isinstance(selection, FragmentSpreadNode):
                    inner = fragment_totals(selection.name.value)
                else:  # GraphQL has no other kind of selection
                    continue
                cost += inner.cost
                names.update(inner.names)
            return self._within(_Totals(cost, names))

        def fragment_totals(name: str) -> _Totals:
            if name in expanded:
                return expanded[name]
            definition = fragments.get(name)
            # Unknown and cyclic spreads count for nothing here: validation refuses them.
            if definition is None or name in in_progress:
                return _Totals(0, Counter())
            in_progress.add(name)
            expanded[name] = totals(definition.selection_set)
            in_progress.discard(name)
            return expanded[name]

        for definition in document.definitions:
            if isinstance(definition, OperationDefinitionNode | FragmentDefinitionNode):
                totals(definition.selection_set)

    def _within(self, found: _Totals) -> _Totals:
        limits = self.limits
        if found.cost > limits.max_cost:
            raise OverBudget(
                f"The document selects more than {limits.max_cost} fields once its fragments "
                "are expanded; that is the cost limit."
            )
        if found.names:
            name, count = found.names.most_common(1)[0]
            if count > limits.max_field_repeats:
                raise OverBudget(
                    f"The field '{name}' is selected {count} times in one selection set; "
                    f"the limit is {limits.max_field_repeats}."
                )
        return found
