"""Validate an object against a CustomResourceDefinition the way the Kubernetes API server would.

No API server can be installed here (REFERENCE.md, "Storage and cluster stand-ins"), so every object
Slipway emits is checked against the real CRD files in `../shared/crds` (DESIGN.md §6). A validator
that passes everything proves nothing, so this one is strict where the API server is strict, and its
own tests (tests/test_training_jobs.py) show it catching a typo, a wrong type and a missing field.

    validate_against_crd(obj, crd_path("trainer.kubeflow.org_trainjobs.yaml"))   # raises CRDValidationError
    crd_errors(obj, path)                                                         # the same, as a list

Each error names the JSON path of the offending value, kubectl style: `spec.trainer.env[1].name: ...`.

What is checked, in the order the API server works (decode, default, prune, validate):

- `apiVersion` is `<spec.group>/<a served version>`, and that version's schema is the one used;
  `kind` is `spec.names.kind`.
- Root `metadata` is an ObjectMeta: known fields only; `name` required (unless `generateName`) and a
  DNS-1123 subdomain; `namespace` a DNS-1123 label, and absent on cluster-scoped kinds; label keys and
  values and annotation keys well formed.
- `default`s are applied before validation, as the API server does.
- Unknown fields are errors (the API server would prune them silently, which is how typos get lost):
  an object schema without `additionalProperties` and without `x-kubernetes-preserve-unknown-fields`
  accepts only its `properties` (none, when it declares none).
- The OpenAPI v3.0 keywords the CRDs use (type, required, enum, pattern, min/max, min/maxLength,
  min/maxItems, minProperties, anyOf/allOf/oneOf/not, additionalProperties), through jsonschema's
  Draft 4 validator: OpenAPI 3.0 schemas are Draft 4 semantics (boolean `exclusiveMinimum`); integers
  are ints (not bools, not 1.0); `nullable: true` admits null, and null is an error elsewhere;
  `format` int32 / int64 ranges, date-time (RFC 3339) and byte (base64).
- `x-kubernetes-preserve-unknown-fields`: the object keeps fields its schema does not list.
- `x-kubernetes-int-or-string`: an int or a string, and nothing else (a quantity pattern beside it
  applies to strings).
- `x-kubernetes-embedded-resource`: `apiVersion` and `kind` required, `metadata` an ObjectMeta.
- `x-kubernetes-list-type`: `set` items unique; `map` items carry every `x-kubernetes-list-map-keys`
  key and are unique by them; `atomic` adds no constraint.
- `x-kubernetes-validations` (CEL): evaluated by a small CEL interpreter below that covers literals,
  field selection, indexing, `has()`, `size()`, `matches()`, `startsWith/endsWith/contains`, `in`,
  comparison, arithmetic, `&&`/`||`/`!` (with CEL's error absorption), `?:`, and the macros `all`,
  `exists`, `exists_one`, `filter` and `map`. That is every rule in the CRDs we ship today except the
  transition rules. A rule it cannot parse is reported as an error, never passed in silence.

What is skipped, and why:

- Transition rules (those that read `oldSelf`, e.g. `self == oldSelf`, "field is immutable"): the
  API server evaluates them only on update, never on create, and there is no old object here.
- `x-kubernetes-map-type` (`granular`/`atomic`): a server-side-apply merge strategy, not a constraint.
- CEL cost budgets, `messageExpression` (the plain `message` is reported), and admission webhooks
  (the Trainer and Training Operator webhooks' rules are the builders' job, tested there).
"""

from __future__ import annotations

import base64
import binascii
import copy
import dataclasses
import datetime
import functools
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft4Validator, FormatChecker, ValidationError, validators
from jsonschema import _keywords as draft4_keywords

ROOT = Path(__file__).resolve().parent.parent

# --- where the CRDs are ------------------------------------------------------------------------------


# The CRD files, copied unchanged from ../shared/crds (their README gives each upstream commit) so that a
# clean clone tests without the shared folder; test_the_vendored_crds_are_the_shared_ones keeps them equal.
CRDS_DIR = Path(__file__).resolve().parent / "crds"


def crds_dir() -> Path:
    """The folder of CRD files: $SLIPWAY_CRDS (to try other versions), else the vendored `tests/crds`."""
    return Path(os.environ["SLIPWAY_CRDS"]) if os.environ.get("SLIPWAY_CRDS") else CRDS_DIR


def crd_path(filename: str) -> Path:
    """The path of one CRD file, e.g. `crd_path("trainer.kubeflow.org_trainjobs.yaml")`."""
    path = crds_dir() / filename
    if not path.is_file():
        raise FileNotFoundError(f"no CRD file {path}")
    return path


@functools.cache
def load_crd(path: Path) -> dict[str, Any]:
    """The CustomResourceDefinition in `path`, with the Helm guards some projects wrap it in removed."""
    text = Path(path).read_text()
    text = re.sub(r"\{\{-?\s*/\*.*?\*/\s*-?\}\}", "", text, flags=re.S)  # {{/* licence comment */}}
    text = "\n".join(line for line in text.splitlines() if not re.fullmatch(r"\s*\{\{.*\}\}\s*", line))
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: a 40,000-line CRD in 1 s, not 8
    documents = [doc for doc in yaml.load_all(text, Loader=loader) if doc]
    crds = [doc for doc in documents if doc.get("kind") == "CustomResourceDefinition"]
    if len(crds) != 1:
        raise ValueError(f"{path}: expected one CustomResourceDefinition, found {len(crds)}")
    return crds[0]


# --- the entry points ----------------------------------------------------------------------------------


class CRDValidationError(AssertionError):
    """The object would be rejected (or silently pruned) by the API server; `errors` lists why."""

    def __init__(self, what: str, crd: str, errors: list[str]):
        self.errors = errors
        super().__init__(f"{what} is invalid against {crd}:\n  " + "\n  ".join(errors))


def validate_against_crd(obj: Mapping[str, Any], crd_path: Path) -> None:
    """Raises CRDValidationError, listing every error with its JSON path, unless `obj` is valid."""
    errors = crd_errors(obj, crd_path)
    if errors:
        metadata = obj.get("metadata") if isinstance(obj, Mapping) else None
        name = metadata.get("name") if isinstance(metadata, Mapping) else None
        kind = obj.get("kind") if isinstance(obj, Mapping) else None
        raise CRDValidationError(f"{kind or 'object'} {name or '<unnamed>'}", Path(crd_path).name, errors)


def crd_errors(obj: Mapping[str, Any], crd_path: Path) -> list[str]:
    """Every reason the API server would refuse `obj` (or drop part of it), each starting with its path."""
    crd = load_crd(Path(crd_path))
    if not isinstance(obj, Mapping):
        return [f"<root>: must be an object, got {type(obj).__name__}"]
    spec = crd["spec"]
    errors: list[str] = []

    group, _, version = str(obj.get("apiVersion", "")).rpartition("/")
    served = [v for v in spec["versions"] if v.get("served")]
    chosen = next((v for v in served if v["name"] == version), None)
    if group != spec["group"] or chosen is None:
        known = ", ".join(f"{spec['group']}/{v['name']}" for v in served)
        return [f"apiVersion: {obj.get('apiVersion')!r} is not served by {crd['metadata']['name']} (served: {known})"]
    if obj.get("kind") != spec["names"]["kind"]:
        errors.append(f"kind: {obj.get('kind')!r} is not {spec['names']['kind']!r}")

    metadata = obj.get("metadata")
    if not isinstance(metadata, Mapping):
        errors.append("metadata: required object is missing")
    else:
        errors += object_meta_errors(metadata, "metadata", root=True)
        if spec["scope"] == "Cluster" and metadata.get("namespace"):
            errors.append(f"metadata.namespace: {spec['names']['kind']} is cluster-scoped and takes no namespace")

    schema = _prepared_schema(Path(crd_path), chosen["name"])
    instance = copy.deepcopy(dict(obj))
    _apply_defaults(instance, schema)
    validator = _CRDValidator(schema, format_checker=_FORMATS)
    for error in sorted(validator.iter_errors(instance), key=lambda e: (list(map(str, e.absolute_path)), e.message)):
        if error.validator == "anyOf" and error.schema.get("x-kubernetes-int-or-string"):
            continue  # the x-kubernetes-int-or-string keyword says it more plainly
        message = error.message
        if error.validator == "pattern":  # jsonschema quotes the pattern with doubled backslashes
            message = f"{error.instance!r} does not match {error.validator_value}"
        errors.append(f"{json_path(error.absolute_path)}: {message}")
    return errors


def json_path(parts: Iterable[str | int]) -> str:
    """kubectl-style path: `spec.containers[0].resources.limits['nvidia.com/gpu']`."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_$][A-Za-z0-9_$-]*", part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out or "<root>"


# --- ObjectMeta ------------------------------------------------------------------------------------------

OBJECT_META_FIELDS = {
    "annotations", "creationTimestamp", "deletionGracePeriodSeconds", "deletionTimestamp", "finalizers",
    "generateName", "generation", "labels", "managedFields", "name", "namespace", "ownerReferences",
    "resourceVersion", "selfLink", "uid",
}
DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")


def is_dns1123_label(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 63 and DNS1123_LABEL.fullmatch(value) is not None


def is_dns1123_subdomain(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 253 and DNS1123_SUBDOMAIN.fullmatch(value) is not None


def is_qualified_name(key: object) -> bool:
    """A label or annotation key: an optional DNS-subdomain prefix and `/`, then a name of at most 63."""
    if not isinstance(key, str):
        return False
    prefix, _, name = key.rpartition("/")
    if "/" in key and not is_dns1123_subdomain(prefix):
        return False
    return len(name) <= 63 and _QUALIFIED_NAME.fullmatch(name) is not None


def is_label_value(value: object) -> bool:
    return isinstance(value, str) and (value == "" or (len(value) <= 63 and _QUALIFIED_NAME.fullmatch(value)))


def object_meta_errors(metadata: Mapping[str, Any], where: str, root: bool) -> list[str]:
    """The API server's own ObjectMeta checks, which no CRD schema spells out."""
    errors = [f"{where}.{key}: unknown field {key!r}" for key in metadata if key not in OBJECT_META_FIELDS]
    name = metadata.get("name")
    if name is None:
        if root and not metadata.get("generateName"):
            errors.append(f"{where}.name: required value (or generateName)")
    elif not is_dns1123_subdomain(name):
        errors.append(f"{where}.name: {name!r} is not a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', "
                      "starting and ending alphanumeric, at most 253)")
    namespace = metadata.get("namespace")
    if namespace is not None and not is_dns1123_label(namespace):
        errors.append(f"{where}.namespace: {namespace!r} is not a DNS-1123 label")
    for field, check_values in (("labels", True), ("annotations", False)):
        values = metadata.get(field)
        if values is None:
            continue
        if not isinstance(values, Mapping):
            errors.append(f"{where}.{field}: must be a map of strings")
            continue
        for key, value in values.items():
            at = f"{where}.{field}[{key!r}]"
            if not is_qualified_name(key):
                errors.append(f"{at}: key is not a qualified name ([prefix/]name, name at most 63 characters)")
            if not isinstance(value, str):
                errors.append(f"{at}: value must be a string, got {type(value).__name__}")
            elif check_values and not is_label_value(value):
                errors.append(f"{at}: {value!r} is not a valid label value (at most 63 of [A-Za-z0-9-_.])")
    return errors


# --- schema preparation and the extended Draft 4 validator ------------------------------------------------

_CLOSED = "x-slipway-closed"  # set on object schemas that accept only their declared properties
_IMPLICIT = "x-slipway-implicit"  # properties an embedded resource has without declaring them


@functools.cache
def _prepared_schema(path: Path, version: str) -> dict[str, Any]:
    crd = load_crd(path)
    [entry] = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = copy.deepcopy(entry["schema"]["openAPIV3Schema"])
    _mark_closed(schema)
    # Root metadata is an ObjectMeta, checked by object_meta_errors; the CRD only says `type: object`.
    schema.setdefault("properties", {})["metadata"] = {"type": "object"}
    return schema


def _mark_closed(schema: dict[str, Any]) -> None:
    """Marks every structural object node that would prune unknown fields (see the module docstring)."""
    is_object = schema.get("type") == "object" or "properties" in schema
    if (is_object and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        schema[_CLOSED] = True
    if schema.get("x-kubernetes-embedded-resource"):
        schema[_IMPLICIT] = ["apiVersion", "kind", "metadata"]
        schema.get("properties", {}).pop("metadata", None)  # validated as an ObjectMeta instead
    for child in schema.get("properties", {}).values():
        _mark_closed(child)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            _mark_closed(schema[key])


def _apply_defaults(instance: Any, schema: Mapping[str, Any]) -> None:
    """Fills absent properties that have a `default`, in place, as the API server does on create."""
    if isinstance(instance, dict):
        for name, child in schema.get("properties", {}).items():
            if name not in instance and "default" in child:
                instance[name] = copy.deepcopy(child["default"])
            if name in instance:
                _apply_defaults(instance[name], child)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name, value in instance.items():
                if name not in schema.get("properties", {}):
                    _apply_defaults(value, extra)
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for item in instance:
            _apply_defaults(item, schema["items"])


def _closed(validator: Any, closed: bool, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    if not closed or not isinstance(instance, dict):
        return
    known = set(schema.get("properties", {})) | set(schema.get(_IMPLICIT, ()))
    for key in instance:
        if key not in known:
            yield ValidationError(f"unknown field {key!r} (the API server would drop it)", path=[key])


def _required(validator: Any, required: list[str], instance: Any,
              schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    if isinstance(instance, dict):
        for name in required:
            if name not in instance:
                yield ValidationError("required field is missing", path=[name])


def _type(validator: Any, types: Any, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    if instance is None and schema.get("nullable"):
        return
    yield from draft4_keywords.type(validator, types, instance, schema)


def _int_or_string(validator: Any, flag: bool, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    if flag and not (isinstance(instance, str) or (isinstance(instance, int) and not isinstance(instance, bool))):
        yield ValidationError(f"{instance!r} must be an integer or a string")


def _embedded(validator: Any, flag: bool, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    if not flag or not isinstance(instance, dict):
        return
    for field in ("apiVersion", "kind"):
        if not isinstance(instance.get(field), str) or not instance[field]:
            yield ValidationError("an embedded resource needs a non-empty string", path=[field])
    metadata = instance.get("metadata", {})
    if not isinstance(metadata, Mapping):
        yield ValidationError("must be an object", path=["metadata"])
        return
    for message in object_meta_errors(metadata, "metadata", root=False):
        field, _, text = message.partition(": ")
        yield ValidationError(text, path=[part for part in re.split(r"\.(?![^\[]*\])", field) if part])


def _list_type(validator: Any, list_type: str, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    if not isinstance(instance, list):
        return
    if list_type == "set":
        seen: list[Any] = []
        for index, item in enumerate(instance):
            if any(_cel_equal(item, other) for other in seen):
                yield ValidationError(f"duplicate value {item!r} in a list of type set", path=[index])
            seen.append(item)
    elif list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        seen_keys: dict[tuple[Any, ...], int] = {}
        for index, item in enumerate(instance):
            if not isinstance(item, dict):
                yield ValidationError("items of a list of type map must be objects", path=[index])
                continue
            missing = [key for key in keys if key not in item]
            for key in missing:
                yield ValidationError("required list-map key is missing", path=[index, key])
            if missing:
                continue
            identity = tuple(repr(item[key]) for key in keys)
            if identity in seen_keys:
                described = ", ".join(f"{key}={item[key]!r}" for key in keys)
                yield ValidationError(f"duplicate entry with {described} (also at [{seen_keys[identity]}])",
                                      path=[index])
            else:
                seen_keys[identity] = index


def _cel_rules(validator: Any, rules: list[dict[str, Any]], instance: Any,
               schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    for rule in rules:
        expression = rule["rule"]
        if is_transition_rule(expression):
            continue
        path = [part for part in re.split(r"[.\[\]']+", rule.get("fieldPath", "")) if part]
        try:
            program = compile_cel(expression)
        except CelError as error:
            yield ValidationError(f"CEL rule {expression!r} is not supported by this validator ({error})", path=path)
            continue
        try:
            result = program({"self": instance})
        except CelError as error:
            yield ValidationError(f"CEL rule {expression!r} could not be evaluated: {error}", path=path)
            continue
        if result is not True:
            yield ValidationError(rule.get("message") or f"failed rule: {expression}", path=path)


def _is_int32(value: object) -> bool:
    return not isinstance(value, int) or isinstance(value, bool) or -(2**31) <= value < 2**31


def _is_int64(value: object) -> bool:
    return not isinstance(value, int) or isinstance(value, bool) or -(2**63) <= value < 2**63


def _is_datetime(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not re.fullmatch(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)", value):
        return False
    try:
        datetime.datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _is_byte(value: object) -> bool:
    if not isinstance(value, str):
        return True
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


_FORMATS = FormatChecker(formats=())
for _name, _check in (("int32", _is_int32), ("int64", _is_int64), ("date-time", _is_datetime), ("byte", _is_byte)):
    _FORMATS.checks(_name)(_check)

_CRDValidator = validators.extend(
    Draft4Validator,
    {
        "type": _type,
        "required": _required,
        _CLOSED: _closed,
        "x-kubernetes-int-or-string": _int_or_string,
        "x-kubernetes-embedded-resource": _embedded,
        "x-kubernetes-list-type": _list_type,
        "x-kubernetes-validations": _cel_rules,
    },
)


# --- the CEL subset ----------------------------------------------------------------------------------------


class CelError(Exception):
    """A CEL rule cannot be parsed (unsupported syntax) or evaluated (e.g. a missing field)."""


@dataclasses.dataclass(frozen=True)
class CelRule:
    path: str
    rule: str
    message: str

    @property
    def transition(self) -> bool:
        return is_transition_rule(self.rule)


def is_transition_rule(rule: str) -> bool:
    """Rules that compare with the stored object: evaluated on update only, never on create."""
    return re.search(r"\boldSelf\b", rule) is not None


def cel_rules(crd_path: Path) -> list[CelRule]:
    """Every `x-kubernetes-validations` rule in every served version of a CRD, with its schema path."""
    found: list[CelRule] = []

    def walk(schema: Mapping[str, Any], path: str) -> None:
        for rule in schema.get("x-kubernetes-validations", []):
            found.append(CelRule(path or "<root>", rule["rule"], rule.get("message", "")))
        for name, child in schema.get("properties", {}).items():
            walk(child, f"{path}.{name}" if path else name)
        for key, suffix in (("items", "[*]"), ("additionalProperties", "[*]")):
            if isinstance(schema.get(key), Mapping):
                walk(schema[key], path + suffix)

    for version in load_crd(Path(crd_path))["spec"]["versions"]:
        walk(version["schema"]["openAPIV3Schema"], "")
    return found


_TOKEN = re.compile(r"""
    \s*(?:
      (?P<number>\d+\.\d+(?:[eE][+-]?\d+)?|0x[0-9a-fA-F]+u?|\d+u?)
    | (?P<string>[rR]?'(?:[^'\\]|\\.)*'|[rR]?"(?:[^"\\]|\\.)*")
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<op>&&|\|\||==|!=|<=|>=|[-+*/%<>!?:.,()\[\]{}])
    )""", re.X)


def _tokens(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            raise CelError(f"cannot read {text[position:position + 20]!r}")
        position = match.end()
        kind = match.lastgroup
        value = match.group(kind)
        if kind == "number":
            raw = value.rstrip("u")
            value = float(raw) if "." in raw else int(raw, 16) if raw.startswith("0x") else int(raw)
        elif kind == "string":
            raw_string = value[0] in "rR"
            body = value[2:-1] if raw_string else value[1:-1]
            value = body if raw_string else re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m[1], m[1]), body)
        out.append((kind, value))
    out.append(("end", None))
    return out


_MACROS = {"all", "exists", "exists_one", "filter", "map"}
_BINARY = [("||",), ("&&",), ("==", "!=", "<", "<=", ">", ">=", "in"), ("+", "-"), ("*", "/", "%")]


class _Parser:
    """Precedence climbing over the tokens; produces closures `env -> value`."""

    def __init__(self, text: str):
        self.tokens = _tokens(text)
        self.at = 0

    def peek(self) -> tuple[str, Any]:
        return self.tokens[self.at]

    def take(self, expected: str | None = None) -> tuple[str, Any]:
        token = self.tokens[self.at]
        if expected is not None and token[1] != expected:
            raise CelError(f"expected {expected!r}, found {token[1]!r}")
        self.at += 1
        return token

    def parse(self) -> Callable[[dict[str, Any]], Any]:
        node = self.expression()
        if self.peek()[0] != "end":
            raise CelError(f"unexpected {self.peek()[1]!r}")
        return node

    def expression(self) -> Callable[[dict[str, Any]], Any]:
        condition = self.binary(0)
        if self.peek()[1] != "?":
            return condition
        self.take("?")
        yes = self.expression()
        self.take(":")
        no = self.expression()
        return lambda env: yes(env) if _truth(condition(env)) else no(env)

    def binary(self, level: int) -> Callable[[dict[str, Any]], Any]:
        if level == len(_BINARY):
            return self.unary()
        left = self.binary(level + 1)
        while self.peek()[1] in _BINARY[level] and self.peek()[0] in ("op", "name"):
            operator = self.take()[1]
            right = self.binary(level + 1)
            left = _combine(operator, left, right)
        return left

    def unary(self) -> Callable[[dict[str, Any]], Any]:
        if self.peek()[1] == "!":
            self.take()
            operand = self.unary()
            return lambda env: not _truth(operand(env))
        if self.peek()[1] == "-":
            self.take()
            operand = self.unary()
            return lambda env: -_number(operand(env))
        return self.member()

    def member(self) -> Callable[[dict[str, Any]], Any]:
        node = self.primary()
        while self.peek()[1] in (".", "["):
            if self.take()[1] == "[":
                index = self.expression()
                self.take("]")
                node = _index(node, index)
                continue
            kind, name = self.take()
            if kind != "name":
                raise CelError(f"expected a field name after '.', found {name!r}")
            if self.peek()[1] != "(":
                node = _select(node, name)
                continue
            self.take("(")
            if name in _MACROS:
                variable = self.take()
                if variable[0] != "name":
                    raise CelError(f"{name}() needs a variable name")
                self.take(",")
                body = self.expression()
                self.take(")")
                node = _macro(name, node, variable[1], body)
            else:
                node = _method(name, node, self.arguments())
        return node

    def arguments(self) -> list[Callable[[dict[str, Any]], Any]]:
        args = []
        while self.peek()[1] != ")":
            args.append(self.expression())
            if self.peek()[1] == ",":
                self.take(",")
        self.take(")")
        return args

    def primary(self) -> Callable[[dict[str, Any]], Any]:
        kind, value = self.take()
        if kind in ("number", "string"):
            return lambda env: value
        if value == "(" and kind == "op":
            inner = self.expression()
            self.take(")")
            return inner
        if value == "[" and kind == "op":
            items = []
            while self.peek()[1] != "]":
                items.append(self.expression())
                if self.peek()[1] == ",":
                    self.take(",")
            self.take("]")
            return lambda env: [item(env) for item in items]
        if value == "{" and kind == "op":
            pairs = []
            while self.peek()[1] != "}":
                key = self.expression()
                self.take(":")
                pairs.append((key, self.expression()))
                if self.peek()[1] == ",":
                    self.take(",")
            self.take("}")
            return lambda env: {k(env): v(env) for k, v in pairs}
        if kind != "name":
            raise CelError(f"unexpected {value!r}")
        if value in ("true", "false", "null"):
            constant = {"true": True, "false": False, "null": None}[value]
            return lambda env: constant
        if self.peek()[1] != "(":
            return lambda env: _variable(env, value)
        self.take("(")
        if value == "has":
            target = self.expression()
            self.take(")")
            selection = getattr(target, "cel_select", None)
            if selection is None:
                raise CelError("has() needs a field selection, e.g. has(self.field)")
            operand, field = selection
            return lambda env: _has(operand(env), field)
        return _function(value, self.arguments())


def _truth(value: Any) -> bool:
    if not isinstance(value, bool):
        raise CelError(f"expected a bool, got {type(value).__name__}")
    return value


def _number(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CelError(f"expected a number, got {type(value).__name__}")
    return value


def _cel_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_cel_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_cel_equal(a[k], b[k]) for k in a)
    return a == b


def _combine(operator: str, left: Callable, right: Callable) -> Callable[[dict[str, Any]], Any]:
    if operator in ("&&", "||"):
        absorbing = operator == "||"  # true absorbs ||, false absorbs &&, even an error on the other side

        def logical(env: dict[str, Any]) -> bool:
            failure = None
            for side in (left, right):
                try:
                    if _truth(side(env)) == absorbing:
                        return absorbing
                except CelError as error:
                    failure = failure or error
            if failure:
                raise failure
            return not absorbing
        return logical

    def apply(env: dict[str, Any]) -> Any:
        a, b = left(env), right(env)
        if operator == "==":
            return _cel_equal(a, b)
        if operator == "!=":
            return not _cel_equal(a, b)
        if operator == "in":
            if isinstance(b, list):
                return any(_cel_equal(a, item) for item in b)
            if isinstance(b, dict):
                return a in b
            raise CelError(f"'in' needs a list or map, got {type(b).__name__}")
        if operator == "+" and isinstance(a, (str, list)) and type(a) is type(b):
            return a + b
        if operator in ("<", "<=", ">", ">=") and isinstance(a, str) and isinstance(b, str):
            return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[operator]
        x, y = _number(a), _number(b)
        if operator in ("/", "%") and y == 0:
            raise CelError("division by zero")
        return {"<": lambda: x < y, "<=": lambda: x <= y, ">": lambda: x > y, ">=": lambda: x >= y,
                "+": lambda: x + y, "-": lambda: x - y, "*": lambda: x * y,
                "/": lambda: x // y if isinstance(x, int) and isinstance(y, int) else x / y,
                "%": lambda: x % y}[operator]()
    return apply


def _variable(env: dict[str, Any], name: str) -> Any:
    if name not in env:
        raise CelError(f"undeclared reference to {name!r}")
    return env[name]


def _select(node: Callable, field: str) -> Callable[[dict[str, Any]], Any]:
    def select(env: dict[str, Any]) -> Any:
        value = node(env)
        if not isinstance(value, dict):
            raise CelError(f"cannot select {field!r} from {type(value).__name__}")
        if field not in value:
            raise CelError(f"no such key: {field}")
        return value[field]
    select.cel_select = (node, field)  # type: ignore[attr-defined]  # what has(a.b) looks into
    return select


def _has(value: Any, field: str) -> bool:
    if not isinstance(value, dict):
        raise CelError(f"has() on {type(value).__name__}")
    return field in value


def _index(node: Callable, index: Callable) -> Callable[[dict[str, Any]], Any]:
    def lookup(env: dict[str, Any]) -> Any:
        container, key = node(env), index(env)
        try:
            return container[key]
        except (KeyError, IndexError, TypeError):
            raise CelError(f"no such key or index: {key!r}") from None
    return lookup


def _macro(name: str, target: Callable, variable: str, body: Callable) -> Callable[[dict[str, Any]], Any]:
    def run(env: dict[str, Any]) -> Any:
        collection = target(env)
        if not isinstance(collection, (list, dict)):
            raise CelError(f"{name}() needs a list or map, got {type(collection).__name__}")
        values = [body({**env, variable: item}) for item in collection]
        if name == "all":
            return all(_truth(v) for v in values)
        if name == "exists":
            return any(_truth(v) for v in values)
        if name == "exists_one":
            return sum(_truth(v) for v in values) == 1
        if name == "filter":
            return [item for item, keep in zip(collection, values, strict=True) if _truth(keep)]
        return values  # map
    return run


def _size(value: Any) -> int:
    if not isinstance(value, (str, list, dict, bytes)):
        raise CelError(f"size() of {type(value).__name__}")
    return len(value)


_METHODS: dict[str, Callable[..., Any]] = {
    "size": _size,
    "matches": lambda s, pattern: re.search(pattern, s) is not None,
    "startsWith": lambda s, prefix: s.startswith(prefix),
    "endsWith": lambda s, suffix: s.endswith(suffix),
    "contains": lambda s, part: part in s,
    "lowerAscii": lambda s: s.lower(),
    "upperAscii": lambda s: s.upper(),
}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "size": _size,
    "int": int,
    "double": float,
    "string": lambda v: str(v).lower() if isinstance(v, bool) else str(v),
}


def _method(name: str, target: Callable, args: list[Callable]) -> Callable[[dict[str, Any]], Any]:
    if name not in _METHODS:
        raise CelError(f"unsupported method .{name}()")
    function = _METHODS[name]

    def call(env: dict[str, Any]) -> Any:
        receiver = target(env)
        if name != "size" and not isinstance(receiver, str):
            raise CelError(f".{name}() on {type(receiver).__name__}")
        try:
            return function(receiver, *(arg(env) for arg in args))
        except (TypeError, re.error) as error:
            raise CelError(f".{name}(): {error}") from None
    return call


def _function(name: str, args: list[Callable]) -> Callable[[dict[str, Any]], Any]:
    if name not in _FUNCTIONS:
        raise CelError(f"unsupported function {name}()")
    function = _FUNCTIONS[name]

    def call(env: dict[str, Any]) -> Any:
        try:
            return function(*(arg(env) for arg in args))
        except (TypeError, ValueError) as error:
            raise CelError(f"{name}(): {error}") from None
    return call


@functools.cache
def compile_cel(rule: str) -> Callable[[dict[str, Any]], Any]:
    """A callable that evaluates `rule` given `{"self": value}`; CelError when it uses unsupported CEL."""
    return _Parser(rule).parse()
