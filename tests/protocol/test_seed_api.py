"""The public API is the one the seed's page documents: every class, member and signature on it.

``tests/seed/000_822a6d24f818f845.txt`` (the project's copy of the seed's API page of the
existing engine's ``database`` module) is read as a listing: the module's ``__all__``, a heading
per class (``Name`` or ``Name dataclass``, then ``Bases: ...``), its attributes (``name
instance-attribute``, ``name = default class-attribute instance-attribute``) and its members
(``name``, ``name classmethod``, ``name property``), each method followed by ``Source code in
...`` and its ``def`` (only the ``def`` line(s) are read; the bodies show the existing
implementation's behaviour, not ours). The parser refuses a line it does not recognise, so a page
in another format fails here instead of being checked half.

Then, for each documented class: it is exported by ``client_sdk`` (and in ``__all__``), has the
documented bases (a ``Protocol``, a ``StrEnum``) and is a dataclass when the page says so; its
enum members have the documented values; its dataclass fields come first, in the documented order,
with the documented defaults (a literal's value, a ``default_factory``'s kind of value,
``compare=False``); and each documented method has the documented parameters, by name, in order,
of the same kind (positional or keyword-only), required where documented required and with the
documented default where one is written as a literal. Anything we add comes after the documented
parameters, keyword-only and optional, so that no documented call means something else here.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import inspect
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

import client_sdk
from tests.conftest import SEED, SHARED_SEED

PAGE = SEED / "000_822a6d24f818f845.txt"

# -------------------------------------------------------------------------------------------- parsing


@dataclass
class Attribute:
    name: str
    default: str | None
    """The default's source text as the page writes it, None for a required field."""


@dataclass
class Member:
    name: str
    kind: str
    """``method``, ``classmethod``, ``staticmethod`` or ``property``."""
    signature: ast.arguments | None = None
    """The documented parameters (``self``/``cls`` included), when the page shows the ``def``."""


@dataclass
class DocumentedClass:
    name: str
    dataclass: bool
    bases: list[str] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    members: list[Member] = field(default_factory=list)
    init: ast.arguments | None = None


@dataclass
class Page:
    exported: list[str]
    classes: dict[str, DocumentedClass]


ALL_LINE = re.compile(r"^__all__ = (?P<names>\[.*\]) module-attribute$")
CLASS_LINE = re.compile(r"^(?P<name>[A-Z][A-Za-z0-9_]*)(?P<dataclass> dataclass)?$")
BASES_LINE = re.compile(r"^Bases: (?P<bases>.+)$")
ATTRIBUTE_LINE = re.compile(
    r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?: = (?P<default>.+?))? (?:class-attribute )?instance-attribute$"
)
MEMBER_LINE = re.compile(r"^(?P<name>_*[a-z][a-z0-9_]*)(?: (?P<kind>classmethod|staticmethod|property))?$")
SOURCE_LINE = re.compile(r"^Source code in \S+$")
PREAMBLE = 3
"""The page's first lines (the site's "Skip to content", the module's short and dotted names)."""


def parse_page(text: str) -> Page:
    lines = text.splitlines()
    exported: list[str] | None = None
    classes: dict[str, DocumentedClass] = {}
    current: DocumentedClass | None = None
    heading: Member | None = None
    """The member whose ``def`` comes next (None: the class's own, i.e. ``__init__``)."""
    index = preamble = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if not line.strip():
            continue
        if exported is None:
            match = ALL_LINE.match(line)
            if match:
                exported = ast.literal_eval(match["names"])
                continue
            preamble += 1
            assert preamble <= PREAMBLE, f"seed page line {index}: expected the module's __all__, got {line!r}"
            continue
        match = CLASS_LINE.match(line)
        if match and match["name"] in exported:
            assert match["name"] not in classes, f"seed page line {index}: {match['name']} documented twice"
            current = classes[match["name"]] = DocumentedClass(match["name"], bool(match["dataclass"]))
            heading = None
            continue
        assert current is not None, f"seed page line {index}: {line!r} before any class heading"
        if match := BASES_LINE.match(line):
            current.bases = [base.strip() for base in match["bases"].split(",")]
            continue
        if match := ATTRIBUTE_LINE.match(line):
            current.attributes.append(Attribute(match["name"], match["default"]))
            continue
        if match := MEMBER_LINE.match(line):
            heading = Member(match["name"], match["kind"] or "method")
            current.members.append(heading)
            continue
        if SOURCE_LINE.match(line):
            header, index = _read_def(lines, index)
            function = ast.parse(header).body[0]
            assert isinstance(function, ast.FunctionDef), f"seed page line {index}: no def after {line!r}"
            decorators = {d.id for d in function.decorator_list if isinstance(d, ast.Name)}
            if heading is None:
                assert function.name == "__init__", f"seed page line {index}: {function.name} has no heading"
                current.init = function.args
            else:
                assert function.name == heading.name, f"seed page line {index}: def {function.name} under {heading.name}"
                assert (heading.kind in decorators) == (heading.kind in ("classmethod", "staticmethod"))
                heading.signature = function.args
            heading = None
            continue
        raise AssertionError(f"seed page line {index}: not a heading, attribute, member or source: {line!r}")
    assert exported is not None, "the seed page has no __all__ line"
    return Page(exported, classes)


def _read_def(lines: list[str], index: int) -> tuple[str, int]:
    """The decorators and ``def`` header of the source block starting at ``lines[index]`` (with ``...``
    as its body), and the index of the first line after the block's body."""
    header: list[str] = []
    while index < len(lines):
        line = lines[index]
        index += 1
        if not header and not line.startswith(("def ", "@")):
            raise AssertionError(f"seed page line {index}: expected a def after 'Source code in', got {line!r}")
        header.append(line)
        if line.startswith("@"):
            continue
        text = "\n".join(header)
        for candidate in (text, text + "\n    ..."):
            try:
                ast.parse(candidate)
            except SyntaxError:
                continue
            while index < len(lines) and (not lines[index].strip() or lines[index][0].isspace()):
                index += 1  # the body: indented lines and blank ones, up to the next heading
            return candidate, index
    raise AssertionError("seed page ends inside a def header")


PARSED = parse_page(PAGE.read_text(encoding="utf-8"))
CLASSES = list(PARSED.classes.values())
METHODS = [(cls, member) for cls in CLASSES for member in cls.members]


def test_the_page_is_read_whole() -> None:
    """Every exported name has its section, and the sections hold what the page shows (a format
    change that the parser misread would show up here as missing members)."""
    assert sorted(PARSED.classes) == sorted(PARSED.exported)
    assert len(PARSED.exported) == 22
    assert sum(len(cls.members) for cls in CLASSES) == 28
    assert sum(len(cls.attributes) for cls in CLASSES) == 56
    assert sum(cls.init is not None for cls in CLASSES) == 6
    assert all(member.signature is not None for _cls, member in METHODS if member.kind != "property")


# -------------------------------------------------------------------------------------------- checks

PARAMETER_KINDS = {
    "posonlyargs": inspect.Parameter.POSITIONAL_ONLY,
    "args": inspect.Parameter.POSITIONAL_OR_KEYWORD,
    "kwonlyargs": inspect.Parameter.KEYWORD_ONLY,
}
NO_DEFAULT = object()
UNKNOWN_CONSTANT = object()
"""A default the page names by a constant of the existing implementation (``BATCH_BYTES_DEFAULT``)."""


@dataclass
class Documented:
    name: str
    kind: inspect._ParameterKind
    default: Any
    """NO_DEFAULT, UNKNOWN_CONSTANT, a value, or a callable's name (``nullcontext``) as a str in a tuple."""


def documented_parameters(arguments: ast.arguments) -> list[Documented]:
    positional = [*arguments.posonlyargs, *arguments.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(arguments.defaults)) + list(arguments.defaults)
    out = [
        Documented(arg.arg, PARAMETER_KINDS["posonlyargs" if i < len(arguments.posonlyargs) else "args"], _default(d))
        for i, (arg, d) in enumerate(zip(positional, defaults, strict=True))
    ]
    if arguments.vararg is not None:
        out.append(Documented(arguments.vararg.arg, inspect.Parameter.VAR_POSITIONAL, NO_DEFAULT))
    out += [Documented(arg.arg, inspect.Parameter.KEYWORD_ONLY, _default(d))
            for arg, d in zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True)]
    if arguments.kwarg is not None:
        out.append(Documented(arguments.kwarg.arg, inspect.Parameter.VAR_KEYWORD, NO_DEFAULT))
    return out


def _default(node: ast.expr | None) -> Any:
    if node is None:
        return NO_DEFAULT
    try:
        return ast.literal_eval(node)
    except ValueError:
        pass
    if isinstance(node, ast.Name):
        return UNKNOWN_CONSTANT if node.id.isupper() else (node.id,)
    return UNKNOWN_CONSTANT


def signature_problems(documented: list[Documented], actual: inspect.Signature, *, implementation: bool = False) -> list[str]:
    """How ``actual`` differs from the documented parameters. An ``implementation`` of a documented
    protocol may make a documented parameter optional (it accepts every documented call)."""
    params = list(actual.parameters.values())
    problems = []
    for position, doc in enumerate(documented):
        if position >= len(params):
            problems.append(f"parameter {position} {doc.name!r} is missing")
            continue
        ours = params[position]
        if ours.name != doc.name:
            problems.append(f"parameter {position} is {ours.name!r}, documented {doc.name!r}")
            continue
        if ours.kind != doc.kind:
            problems.append(f"{doc.name!r} is {ours.kind.description}, documented {doc.kind.description}")
        has_default = ours.default is not inspect.Parameter.empty
        if doc.default is NO_DEFAULT:
            if has_default and not implementation:
                problems.append(f"{doc.name!r} has a default ({ours.default!r}), documented required")
        elif not has_default:
            problems.append(f"{doc.name!r} is required, documented optional")
        elif isinstance(doc.default, tuple):
            if getattr(ours.default, "__name__", None) != doc.default[0]:
                problems.append(f"{doc.name!r} defaults to {ours.default!r}, documented {doc.default[0]}")
        elif doc.default is not UNKNOWN_CONSTANT and (type(ours.default), ours.default) != (type(doc.default), doc.default):
            problems.append(f"{doc.name!r} defaults to {ours.default!r}, documented {doc.default!r}")
    for ours in params[len(documented):]:
        if ours.kind is not inspect.Parameter.KEYWORD_ONLY or ours.default is inspect.Parameter.empty:
            problems.append(f"extra parameter {ours.name!r} must be keyword-only and optional (it is "
                            f"{ours.kind.description}{'' if ours.default is inspect.Parameter.empty else ', optional'})")
    return problems


def _static(cls: type, name: str) -> Any:
    for klass in cls.__mro__:
        if name in vars(klass):
            return vars(klass)[name]
    raise AttributeError(name)


def _function(cls: type, member: Member) -> Callable[..., Any]:
    raw = _static(cls, member.name)
    if member.kind in ("classmethod", "staticmethod"):
        assert isinstance(raw, classmethod if member.kind == "classmethod" else staticmethod), \
            f"{cls.__name__}.{member.name} is documented as a {member.kind}, ours is {type(raw).__name__}"
        return raw.__func__  # type: ignore[no-any-return]
    assert inspect.isfunction(raw), f"{cls.__name__}.{member.name} is documented as a method, ours is {type(raw).__name__}"
    return raw  # type: ignore[no-any-return]


def ours(name: str) -> type:
    assert name in client_sdk.__all__, f"{name} is not in client_sdk.__all__"
    cls = getattr(client_sdk, name)
    assert inspect.isclass(cls), f"client_sdk.{name} is not a class"
    return cls  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", PARSED.exported)
def test_every_documented_name_is_exported(name: str) -> None:
    ours(name)


@pytest.mark.parametrize("doc", CLASSES, ids=lambda c: c.name)
def test_the_class_is_what_the_page_says(doc: DocumentedClass) -> None:
    cls = ours(doc.name)
    for base in doc.bases:
        if base == "Protocol":
            assert getattr(cls, "_is_protocol", False), f"{doc.name} is documented as a Protocol"
        elif base == "StrEnum":
            assert issubclass(cls, enum.StrEnum), f"{doc.name} is documented as a StrEnum"
        else:
            assert base in {klass.__name__ for klass in cls.__mro__}, f"{doc.name} is documented to derive from {base}"
    assert dataclasses.is_dataclass(cls) or not doc.dataclass, f"{doc.name} is documented as a dataclass"
    if doc.init is not None:
        problems = signature_problems(documented_parameters(doc.init)[1:], _parameters_after_self(cls.__init__))
        assert not problems, f"{doc.name}(...): " + "; ".join(problems)


def _parameters_after_self(function: Callable[..., Any]) -> inspect.Signature:
    signature = inspect.signature(function)
    return signature.replace(parameters=list(signature.parameters.values())[1:])


ENUMS = [doc for doc in CLASSES if "StrEnum" in doc.bases]
DATACLASSES = [doc for doc in CLASSES if doc.dataclass]


@pytest.mark.parametrize("doc", ENUMS, ids=lambda c: c.name)
def test_enum_members_have_the_documented_values(doc: DocumentedClass) -> None:
    cls = ours(doc.name)
    documented = {attribute.name: ast.literal_eval(attribute.default or "None") for attribute in doc.attributes}
    assert {member.name: member.value for member in cls} == documented  # type: ignore[attr-defined]


FACTORIES: dict[str, Any] = {"set": set, "list": list, "dict": dict, "defaultdict": defaultdict}


@pytest.mark.parametrize("doc", DATACLASSES, ids=lambda c: c.name)
def test_dataclass_fields_come_in_the_documented_order_with_the_documented_defaults(doc: DocumentedClass) -> None:
    cls = ours(doc.name)
    fields = dataclasses.fields(cls)
    documented = [attribute.name for attribute in doc.attributes]
    assert [f.name for f in fields[: len(documented)]] == documented
    problems = []
    for attribute, ours_field in zip(doc.attributes, fields, strict=False):  # ours may add fields after the documented ones
        problems += _field_problems(attribute, ours_field)
    for extra in fields[len(documented):]:
        if extra.init and extra.default is dataclasses.MISSING and extra.default_factory is dataclasses.MISSING:
            problems.append(f"extra field {extra.name!r} must have a default")
    assert not problems, f"{doc.name}: " + "; ".join(problems)
    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    constructor = [Documented(a.name, positional, NO_DEFAULT if a.default is None else UNKNOWN_CONSTANT) for a in doc.attributes]
    problems = signature_problems(constructor, inspect.signature(cls))
    assert not problems, f"{doc.name}(...): " + "; ".join(problems)


def _field_problems(attribute: Attribute, ours: dataclasses.Field[Any]) -> list[str]:
    name = attribute.name
    has_default = ours.default is not dataclasses.MISSING or ours.default_factory is not dataclasses.MISSING
    if attribute.default is None:
        return [f"{name!r} has a default, documented required"] if has_default else []
    if not has_default:
        return [f"{name!r} is required, documented with default {attribute.default}"]
    expression = ast.parse(attribute.default, mode="eval").body
    if isinstance(expression, ast.Call) and isinstance(expression.func, ast.Name) and expression.func.id == "field":
        options = {keyword.arg: keyword.value for keyword in expression.keywords}
        problems = []
        if "default" in options:
            expected = ast.literal_eval(options["default"])
            if ours.default != expected or type(ours.default) is not type(expected):
                problems.append(f"{name!r} defaults to {ours.default!r}, documented {expected!r}")
        if "default_factory" in options:
            factory = eval(compile(ast.Expression(options["default_factory"]), "<seed>", "eval"), dict(FACTORIES))  # noqa: S307
            made = ours.default_factory() if ours.default_factory is not dataclasses.MISSING else ours.default
            if type(made) is not type(factory()):
                problems.append(f"{name!r} defaults to a {type(made).__name__}, documented a {type(factory()).__name__}")
            elif isinstance(made, defaultdict) and made.default_factory is not factory().default_factory:
                problems.append(
                    f"{name!r} defaults to a defaultdict of {made.default_factory}, documented {factory().default_factory}"
                )
        if "compare" in options and ours.compare != ast.literal_eval(options["compare"]):
            problems.append(f"{name!r} has compare={ours.compare}, documented compare={ast.literal_eval(options['compare'])}")
        return problems
    expected = ast.literal_eval(expression)
    if ours.default != expected or type(ours.default) is not type(expected):
        return [f"{name!r} defaults to {ours.default!r}, documented {expected!r}"]
    return []


@pytest.mark.parametrize(("doc", "member"), METHODS, ids=[f"{c.name}.{m.name}" for c, m in METHODS])
def test_every_documented_member_exists_with_the_documented_signature(doc: DocumentedClass, member: Member) -> None:
    cls = ours(doc.name)
    if member.kind == "property":
        assert isinstance(_static(cls, member.name), property), f"{doc.name}.{member.name} is documented as a property"
        return
    function = _function(cls, member)
    assert member.signature is not None
    problems = signature_problems(documented_parameters(member.signature)[1:], _parameters_after_self(function))
    assert not problems, f"{doc.name}.{member.name}: " + "; ".join(problems)


IMPLEMENTATIONS = {"SyncLock": ["SqliteSyncLock"]}
"""Our classes that implement a documented protocol: each documented call must work on them too."""
IMPLEMENTED = [(doc, member, name) for doc in CLASSES for name in IMPLEMENTATIONS.get(doc.name, [])
               for member in doc.members]


@pytest.mark.parametrize(("doc", "member", "name"), IMPLEMENTED, ids=[f"{n}.{m.name}" for _c, m, n in IMPLEMENTED])
def test_our_implementations_of_a_documented_protocol_take_its_calls(doc: DocumentedClass, member: Member, name: str) -> None:
    cls = ours(name)
    function = _function(cls, member)
    assert member.signature is not None
    problems = signature_problems(documented_parameters(member.signature)[1:], _parameters_after_self(function),
                                  implementation=True)
    assert not problems, f"{name}.{member.name}: " + "; ".join(problems)


# ------------------------------------------------------------------------------- the checker checks


def _signature(source: str) -> inspect.Signature:
    namespace: dict[str, Any] = {}
    exec(source, namespace)  # noqa: S102
    return _parameters_after_self(namespace["f"])


def _documented(source: str) -> list[Documented]:
    function = ast.parse(source).body[0]
    assert isinstance(function, ast.FunctionDef)
    return documented_parameters(function.args)[1:]


@pytest.mark.parametrize(
    ("ours_source", "complaint"),
    [
        ("def f(self, key, data): ...", None),
        ("def f(self, key, data, *, label=''): ...", None),
        ("def f(self, data, key): ...", "parameter 0 is 'data'"),
        ("def f(self, key): ...", "'data' is missing"),
        ("def f(self, key, *, data): ...", "keyword-only"),
        ("def f(self, key, data, label=''): ...", "extra parameter 'label' must be keyword-only"),
        ("def f(self, key, data, *, label): ...", "extra parameter 'label' must be keyword-only and optional"),
        ("def f(self, key, data=None): ...", "'data' has a default"),
    ],
)
def test_the_signature_check_finds_each_kind_of_difference(ours_source: str, complaint: str | None) -> None:
    problems = signature_problems(_documented("def f(self, key: str, data: dict) -> None: ..."), _signature(ours_source))
    if complaint is None:
        assert problems == []
    else:
        assert any(complaint in problem for problem in problems), problems


def test_the_signature_check_compares_documented_defaults() -> None:
    documented = _documented("def f(self, dry_run: bool = False, *, size: int | None = LIMIT, t=nullcontext): ...")
    same = _signature("import contextlib\ndef f(self, dry_run=False, *, size=7, t=contextlib.nullcontext): ...")
    assert signature_problems(documented, same) == []
    assert signature_problems(documented, _signature("def f(self, dry_run=0, *, size=7, t=None): ...")) == [
        "'dry_run' defaults to 0, documented False", "'t' defaults to None, documented nullcontext"]
    assert signature_problems(documented, _signature("def f(self, dry_run, *, size=7, t=None): ..."))[0] == \
        "'dry_run' is required, documented optional"


def test_the_parser_refuses_a_line_it_does_not_know() -> None:
    page = "Skip to content\n\ndb\n\n__all__ = ['Thing'] module-attribute\n\nThing\n\nsome prose here\n"
    with pytest.raises(AssertionError, match="not a heading"):
        parse_page(page)


def test_the_parser_reads_a_multi_line_def_and_skips_its_body() -> None:
    page = (
        "x\n\n__all__ = ['Thing'] module-attribute\n\nThing dataclass\n\nkey instance-attribute\n\n"
        "from_dict classmethod\n\nSource code in a/b.py\n@classmethod\ndef from_dict(\n    cls, key: str,\n"
        "    data: dict[str, Any] | None = None,\n) -> Thing:\n    if key == '':\n        raise X\n\n"
        "    return cls(key)\n\nname property\n"
    )
    parsed = parse_page(page).classes["Thing"]
    assert parsed.dataclass and [a.name for a in parsed.attributes] == ["key"]
    [from_dict, name] = parsed.members
    assert (from_dict.kind, name.kind) == ("classmethod", "property")
    assert from_dict.signature is not None
    assert [(p.name, p.default) for p in documented_parameters(from_dict.signature)] == [
        ("cls", NO_DEFAULT), ("key", NO_DEFAULT), ("data", None)]


# ------------------------------------------------------------------- what the documented members do


def test_records_know_their_key_wherever_they_are_read() -> None:
    from client_sdk import ModelPayload, SyncRecord

    raw = {"data": {"id": "k", "n": 1}, "timestamps": {"id": 5, "n": 7}}
    assert SyncRecord.from_dict("k", raw).key == "k"
    fast = ModelPayload.from_dict({"model_label": "a.B", "records": {"k": raw}})
    slow = ModelPayload.from_dict({"model_label": "a.B", "records": {"k": {**raw, "received_at": 9}}})
    assert fast.records["k"].key == slow.records["k"].key == "k"
    assert slow.records["k"].sync_field_last_modified == 9 == slow.records["k"].last_modified
    assert fast.records["k"].sync_field_last_modified == 7
    # equality is the row's content: not the key it is held under, not when a server stored it
    assert SyncRecord("k", {"n": 1}, {"n": 7}) == SyncRecord("", {"n": 1}, {"n": 7}, 99)
    assert SyncRecord("k", {"n": 1}, {"n": 7}) != SyncRecord("k", {"n": 2}, {"n": 7})
    with pytest.raises(client_sdk.InvalidParameterError):
        SyncRecord("k", {}, {}, -1)
    with pytest.raises(client_sdk.InvalidParameterError):
        SyncRecord(7, {}, {})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        SyncRecord("k", {})  # type: ignore[call-arg]
    with pytest.raises(client_sdk.RecordFieldError):
        SyncRecord.from_dict("", raw)


def test_a_manifest_verifies_its_checksum() -> None:
    from client_sdk import SyncManifest

    manifest = SyncManifest("node", 0)
    assert manifest.checksum == "" and manifest.verify() is False
    sealed = SyncManifest.from_dict(manifest.seal().to_dict())
    assert sealed.verify() is True
    assert SyncManifest.from_dict({**sealed.to_dict(), "checkpoint": 1}).verify() is False
    assert SyncManifest.from_dict({**sealed.to_dict(), "checksum": None}).verify() is False


def test_a_graph_names_its_models_and_their_dependencies() -> None:
    from client_sdk import DependencyGraph

    graph = DependencyGraph({"a.List": set(), "a.Task": {"a.List"}})
    assert graph.known_models() == frozenset({"a.List", "a.Task"}) == graph.labels
    assert graph.dependencies("a.Task") == {"a.List"} and graph.dependencies("a.List") == set()
    assert graph.dependencies("a.Other") == set()
    graph.dependencies("a.Task").add("a.Other")  # a copy
    assert graph.dependencies("a.Task") == {"a.List"}


def test_reconciliation_names_its_keys_as_documented() -> None:
    from client_sdk import ModelPayload, PayloadReconciler, ReconciliationResult, SyncRecord

    local = {"old": SyncRecord("old", {"id": "old", "n": 1}, {"id": 1, "n": 1})}
    payload = ModelPayload("a.B", {key: SyncRecord(key, {"id": key, "n": 2}, {"id": 1, "n": 9}) for key in ("new", "old")})
    outcome = PayloadReconciler().reconcile(payload, local_records=local, checkpoint=5)
    assert (outcome.created_keys, outcome.applied_keys) == ({"new"}, {"old"})
    assert (outcome.compatible_keys, outcome.conflict_keys) == ([], [])
    assert outcome.created is outcome.created_keys and outcome.conflicts is outcome.conflict_keys  # aliases
    assert ReconciliationResult().model_label == ""
    result = client_sdk.DatabaseResult()
    result.merge_reconciliation(outcome)
    assert (result.created, result.applied) == ({"a.B": ["new"]}, {"a.B": ["old"]})
    assert str(client_sdk.ConflictType.BOTH_MODIFIED) == "both_modified"  # StrEnum


# ------------------------------------------------------------------------------------ the page's copy


def test_the_project_ships_the_seed_page() -> None:
    assert PAGE.is_file()


@pytest.mark.skipif(not SHARED_SEED.is_dir(), reason="no ../shared/seed beside the project to compare with")
def test_the_copy_matches_the_shared_seed() -> None:
    shared = {path.name: path.read_bytes() for path in SHARED_SEED.glob("*.txt")}
    copied = {path.name: path.read_bytes() for path in SEED.glob("*.txt")}
    assert sorted(copied) == sorted(shared), "tests/seed must hold exactly the pages of ../shared/seed"
    differing = [name for name in shared if copied[name] != shared[name]]
    assert not differing, f"tests/seed differs from ../shared/seed: {differing}; copy them over"
