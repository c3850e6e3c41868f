"""The API contract: the checked-in SDL, and the shared API.graphql it must cover."""

from __future__ import annotations

from pathlib import Path

from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLUnionType,
    build_schema,
    specified_scalar_types,
)

from server.graphql.schema import export_sdl

ROOT = Path(__file__).resolve().parents[2]
CHECKED_IN = ROOT / "schema.graphql"
CONTRACT_CANDIDATES = (
    ROOT.parent / "shared" / "API.graphql",
    ROOT / "tests" / "contract" / "API.graphql",
)


def test_checked_in_schema_is_the_exported_schema() -> None:
    """Make sure an API change cannot slip in without updating schema.graphql."""
    assert CHECKED_IN.read_text() == export_sdl(), (
        "schema.graphql is stale: run `ghvault export-schema > schema.graphql`"
    )


def _type_ref(type_: object) -> str:
    return str(type_)


def superset_problems(ours: GraphQLSchema, contract: GraphQLSchema) -> list[str]:
    """Every way `ours` fails to offer what `contract` promises."""
    problems: list[str] = []
    for name, theirs in contract.type_map.items():
        if name.startswith("__") or name in specified_scalar_types:
            continue
        mine: GraphQLNamedType | None = ours.type_map.get(name)
        if mine is None:
            problems.append(f"type {name} is missing")
            continue
        if type(mine) is not type(theirs):
            problems.append(f"{name} is a {type(mine).__name__}, not a {type(theirs).__name__}")
            continue
        if isinstance(theirs, GraphQLEnumType):
            assert isinstance(mine, GraphQLEnumType)
            missing = set(theirs.values) - set(mine.values)
            problems += [f"enum value {name}.{value} is missing" for value in sorted(missing)]
        elif isinstance(theirs, GraphQLUnionType):
            assert isinstance(mine, GraphQLUnionType)
            members = {member.name for member in mine.types}
            if members != {member.name for member in theirs.types}:
                problems.append(f"union {name} has members {sorted(members)}")
        elif isinstance(theirs, GraphQLObjectType | GraphQLInterfaceType):
            assert isinstance(mine, GraphQLObjectType | GraphQLInterfaceType)
            for field_name, field in theirs.fields.items():
                my_field = mine.fields.get(field_name)
                if my_field is None:
                    problems.append(f"field {name}.{field_name} is missing")
                    continue
                if _type_ref(my_field.type) != _type_ref(field.type):
                    problems.append(f"{name}.{field_name} is {my_field.type}, not {field.type}")
                for arg_name, arg in field.args.items():
                    my_arg = my_field.args.get(arg_name)
                    if my_arg is None:
                        problems.append(f"argument {name}.{field_name}({arg_name}) is missing")
                    elif (_type_ref(my_arg.type), my_arg.default_value) != (
                        _type_ref(arg.type),
                        arg.default_value,
                    ):
                        problems.append(f"argument {name}.{field_name}({arg_name}) differs")
                extra_required = [
                    arg_name
                    for arg_name, arg in my_field.args.items()
                    if arg_name not in field.args and str(arg.type).endswith("!")
                ]
                problems += [f"{name}.{field_name} requires extra {a}" for a in extra_required]
        elif isinstance(theirs, GraphQLInputObjectType):
            assert isinstance(mine, GraphQLInputObjectType)
            for field_name, field in theirs.fields.items():
                my_field = mine.fields.get(field_name)
                if my_field is None:
                    problems.append(f"input field {name}.{field_name} is missing")
                elif (_type_ref(my_field.type), my_field.default_value) != (
                    _type_ref(field.type),
                    field.default_value,
                ):
                    problems.append(f"input field {name}.{field_name} differs")
    return problems


def _contracts() -> list[Path]:
    """The shared contract beside the checkout when present, and the copy kept in tests/."""
    return [path for path in CONTRACT_CANDIDATES if path.exists()]


def test_schema_offers_everything_the_contract_promises() -> None:
    """Make sure no name in API.graphql is missing, renamed or retyped."""
    contracts = _contracts()
    assert contracts, "no API.graphql to compare with"
    for contract in contracts:
        problems = superset_problems(build_schema(export_sdl()), build_schema(contract.read_text()))
        assert problems == [], contract


def test_superset_check_notices_a_missing_field() -> None:
    """The comparison itself must fail on a schema that drops a contract field."""
    contract = build_schema("type Query { viewer: String!  user(id: ID!): String }")
    ours = build_schema("type Query { viewer: String! }")
    assert superset_problems(ours, contract) == ["field Query.user is missing"]


def test_superset_check_notices_a_retyped_argument() -> None:
    contract = build_schema("type Query { items(first: Int! = 50): String }")
    ours = build_schema("type Query { items(first: Int = 50): String }")
    assert superset_problems(ours, contract) == ["argument Query.items(first) differs"]
