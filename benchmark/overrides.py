"""``--set MODEL.FIELD=VALUE``: config overrides from the command line.

Each flag names a field of a family's config dataclass (``ModelClass.Config``); its text is
turned into a value of the field's annotated type, so ``--set vae.lr=3e-4`` gives the float
3e-4 and ``--set vae.hidden=200`` the int 200.  The result is the same ``{model: {field: value}}``
mapping that a suite file's ``[config.MODEL]`` tables give, and it goes the same way into each
trial (:func:`genbench.suite.plan_trials`), its config hash and its leaderboard row.

Accepted texts, by annotation: ``int``; ``float``; ``bool`` as true/false, 1/0, yes/no, on/off;
``str`` as is; ``tuple``/``list`` of numbers or strings as comma-separated items (``8,16,32``);
an optional field (``float | None``) also takes ``none``.  Other annotations (dicts, modules)
cannot be set from the command line: use a suite file.
"""

from __future__ import annotations

import dataclasses
import types
import typing

from genbench.errors import GenbenchError

TRUE = ("true", "1", "yes", "on")
FALSE = ("false", "0", "no", "off")
NONE = ("none", "null")


def split_flag(flag: str) -> tuple[str, str, str]:
    """``"vae.lr=1e-3"`` -> ``("vae", "lr", "1e-3")``; a flag of another shape is an error that
    shows the expected one."""
    target, sep, text = flag.partition("=")
    model, dot, name = target.strip().partition(".")
    if not (sep and dot and model and name):
        raise GenbenchError(f"--set {flag}: expected MODEL.FIELD=VALUE, e.g. --set vae.lr=3e-4")
    return model, name.strip(), text.strip()


def field_types(config_cls: type) -> dict[str, object]:
    """Field name -> annotation of a config dataclass, with string annotations (``from
    __future__ import annotations``) resolved."""
    try:
        hints = typing.get_type_hints(config_cls)
    except (NameError, TypeError):  # an annotation that names something not importable at run time
        hints = {}
    return {f.name: hints.get(f.name, f.type) for f in dataclasses.fields(config_cls)}


def _parts(annotation) -> tuple[object, tuple]:
    """The origin and arguments of an annotation, ``int | None`` and ``Optional[int]`` alike."""
    origin = typing.get_origin(annotation)
    if origin is types.UnionType:
        origin = typing.Union
    return origin, typing.get_args(annotation)


def _type_name(annotation) -> str:
    return getattr(annotation, "__name__", None) if isinstance(annotation, type) else str(annotation)


def parse_value(text: str, annotation, name: str):
    """``text`` as a value of type ``annotation``; a GenbenchError saying what the field takes
    otherwise (the caller adds which flag it was)."""
    origin, args = _parts(annotation)
    if origin is typing.Union:
        kinds = [a for a in args if a is not type(None)]
        if type(None) in args and text.lower() in NONE:
            return None
        if len(kinds) == 1:
            return parse_value(text, kinds[0], name)
        raise GenbenchError(f"{name} is a {annotation}, which --set cannot type; use a suite file's [config] table")
    if origin in (tuple, list):
        # tuple[int, ...] and list[int] have one item type; a bare tuple or list takes strings
        item = args[0] if len(set(args) - {Ellipsis}) == 1 else str
        items = [parse_value(part.strip(), item, name) for part in text.split(",") if part.strip()]
        return tuple(items) if origin is tuple else items
    if annotation is bool:
        if text.lower() in TRUE:
            return True
        if text.lower() in FALSE:
            return False
        raise GenbenchError(f"{name} must be true or false (or 1/0, yes/no), got {text!r}")
    if annotation in (int, float):
        try:
            return annotation(text)
        except ValueError:
            raise GenbenchError(f"{name} must be {'an int' if annotation is int else 'a float'}, "
                                f"got {text!r}") from None
    if annotation is str:
        return text
    raise GenbenchError(f"{name} is a {_type_name(annotation)}, which --set cannot type; "
                        "use a suite file's [config] table")


def parse_sets(flags: list[str], manager, models: list[str], add: str = "add --model {model}") -> dict[str, dict]:
    """The ``--set`` flags as ``{model: {field: value}}``, each value typed by its field's
    annotation.  ``models`` are the models of this run or check, ``add`` how to add one to it; a
    flag for an unknown model or one not in ``models``, an unknown field or a value of the wrong
    type is a GenbenchError naming the flag and the fix."""
    out: dict[str, dict] = {}
    for flag in flags:
        model, name, text = split_flag(flag)
        try:
            cls = manager.models.get(model)  # an unknown name lists the known ones
        except GenbenchError as exc:
            raise GenbenchError(f"--set {flag}: {exc}") from None
        if model not in models:
            known = ", ".join(models) if models else "none"
            raise GenbenchError(f"--set {flag}: model {model!r} is not in this run (models: {known}); "
                                f"{add.format(model=model)}, or drop the --set")
        types_ = field_types(cls.Config)
        if name not in types_:
            raise GenbenchError(f"--set {flag}: {model}'s config has no field {name!r} "
                                f"(fields: {', '.join(types_)})")
        try:
            value = parse_value(text, types_[name], name)
        except GenbenchError as exc:
            raise GenbenchError(f"--set {flag}: {exc}") from None
        out.setdefault(model, {})[name] = value
    return out


def set_text(value) -> str | None:
    """A config value as the VALUE of a ``--set`` flag that gives it back (None: it has no such
    text, e.g. a dict)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return value if value.strip() == value else None
    if isinstance(value, list | tuple) and value:
        texts = [set_text(v) for v in value if isinstance(v, int | float | str) and not isinstance(v, bool)]
        if len(texts) == len(value) and all(t is not None and "," not in t for t in texts):
            return ",".join(texts)
    return None
