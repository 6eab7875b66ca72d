# -*- test-case-name: tests.test_config -*-
"""
The configuration schema: each setting declared once, on its value class.

A section of the file is a frozen dataclass whose fields are declared with
L{setting}: the default, the check its value goes through (a callable
C{check(value, path)} from L{twistproxy.config.checks} or made here), and,
when it has no default, what to say when it is missing.  L{build} walks
those declarations for any class: it refuses unknown keys (with
L{did_you_mean <twistproxy.config.checks.did_you_mean>} suggestions),
checks each key given at its path (C{routes[2].hosts[0]}), leaves the
others to their defaults, and then applies the class's L{rule}s, the small
functions that tie several settings of one section together.

A plugin declares its options the same way (a dataclass of settings) and
reads its table with L{build}, so that C{python -m twistproxy check} finds
the same mistakes, with the same messages, in every plugin's options.

Sections that are not plain tables (a route's C{cache} may be C{true};
a server may be a URL string) have their own reader, registered with
L{reader}; L{build} then uses it, wherever the class appears.
"""

from __future__ import annotations

from dataclasses import MISSING, Field, field, fields
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Type, TypeVar

from twistproxy.config.checks import (
    ConfigError, _array, _boolean, _index, _integer, _number, _seconds, _size, _string, _strings,
    _table, _token, check_option_names, key_path,
)

_T = TypeVar("_T")
Check = Callable[[object, str], Any]

_READERS: Dict[type, Callable[[object, str], Any]] = {}
_LAYOUTS: Dict[type, Tuple[List[Field], Tuple[str, ...], str]] = {}
_RULES: Dict[type, List[Callable[[Any, Mapping[str, Any], str], None]]] = {}


def setting(default: Any = MISSING, *, check: Check, required: str = "is required",
            factory: Optional[Callable[[], Any]] = None,
            only: Optional[Callable[[Mapping[str, Any], str], Optional[str]]] = None) -> Any:
    """
    Declare one setting of a section, as a dataclass field.

    @param default: Its value when the key is absent; leave it out for a
        setting that must be given.
    @param check: C{check(value, path)} returns the value to keep or raises
        L{ConfigError}.
    @param required: The problem when a setting without a default is
        missing (C{'is required (an endpoint string ...)'}).
    @param factory: Makes the default, for mutable defaults.
    @param only: C{only(table, path)} returns why this key may not appear in
        the table at C{path} (C{"not for tcp listeners"}), or C{None}.
    """
    metadata = {"check": check, "required": required, "only": only}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def others() -> Any:
    """
    Declare the field that takes the keys its section does not declare: a
    plugin's own options, which the plugin's factory reads.
    """
    return field(default_factory=dict, metadata={"others": True})


def names(cls: type) -> Tuple[str, ...]:
    """
    The keys of the settings of C{cls}: what a plugin says it takes.
    """
    return _layout(cls)[1]


def _layout(cls: type) -> Tuple[List[Field], Tuple[str, ...], str]:
    # The settings of cls, their names and its field for the others,
    # worked out once per class: check runs them often.
    layout = _LAYOUTS.get(cls)
    if layout is None:
        declared = [f for f in fields(cls) if "check" in f.metadata]
        rest = next((f.name for f in fields(cls) if f.metadata.get("others")), "")
        layout = _LAYOUTS[cls] = (declared, tuple(f.name for f in declared), rest)
    return layout


def reader(cls: type) -> Callable[[Callable[[object, str], _T]], Callable[[object, str], _T]]:
    """
    Register the function that reads C{cls} instead of L{build}'s walk.
    """
    def register(read: Callable[[object, str], _T]) -> Callable[[object, str], _T]:
        _READERS[cls] = read
        return read
    return register


def rule(cls: type) -> Callable[[Callable[[Any, Mapping[str, Any], str], None]],
                                Callable[[Any, Mapping[str, Any], str], None]]:
    """
    Register a rule of C{cls}: C{rule(value, table, path)}, run once the
    settings are checked, raises L{ConfigError} when they do not agree.
    """
    def register(check: Callable[[Any, Mapping[str, Any], str], None]
                 ) -> Callable[[Any, Mapping[str, Any], str], None]:
        _RULES.setdefault(cls, []).append(check)
        return check
    return register


def read(cls: type, value: object, path: str, takes: str = "") -> Dict[str, Any]:
    """
    Check the table C{value} against the settings of C{cls}.  Keys it does
    not declare are refused, unless C{cls} has a field for L{others}.

    @param takes: For a plugin's options: what the plugin takes, for the
        end of the message about an unknown option (C{'the tcp health check
        takes timeout, port'}); see L{check_option_names}.
    @return: The checked values of the keys present (and the others), as
        keyword arguments for C{cls}.
    """
    declared, names, rest = _layout(cls)
    if takes:
        table = value
        check_option_names(table, names, path, takes)  # type: ignore[arg-type]
    elif rest:
        if not isinstance(value, dict):
            _table(value, path, names)
        table = value
    else:
        table = _table(value, path, names)
    kwargs: Dict[str, Any] = {}
    for f in declared:
        where = key_path(path, f.name)
        only = f.metadata["only"]
        if f.name in table and only is not None:
            refused = only(table, path)
            if refused:
                raise ConfigError(where, refused)
        if f.name not in table:
            if f.default is MISSING and f.default_factory is MISSING:  # type: ignore[misc]
                raise ConfigError(where, f.metadata["required"])
        else:
            kwargs[f.name] = f.metadata["check"](table[f.name], where)
    if rest:
        kwargs[rest] = {k: v for k, v in table.items() if k not in names}
    return kwargs


def build(cls: Type[_T], value: object, path: str, takes: str = "", **given: Any) -> _T:
    """
    Read C{value} at C{path} into a C{cls}: with its registered reader, or
    by L{read}ing its settings and applying its L{rule}s.

    @param takes: For a plugin's options, as for L{read}.
    @param given: Values of fields that do not come from the table (a
        group's name).
    """
    custom = _READERS.get(cls)
    if custom is not None:
        return custom(value, path)  # type: ignore[no-any-return]
    made = cls(**given, **read(cls, value, path, takes))  # type: ignore[call-arg]
    for check in _RULES.get(cls, ()):
        check(made, value, path)  # type: ignore[arg-type]
    return made


def section(cls: type) -> Check:
    """
    The check of a setting whose value is a table read as C{cls}.
    """
    return lambda value, path: build(cls, value, path)


def sections(cls: type, empty: str = "") -> Check:
    """
    The check of an array of tables, each read as C{cls}.

    @param empty: The problem when the array is empty, or C{''} when it
        may be.
    """
    def check(value: object, path: str) -> tuple:
        items = _array(value, path)
        if empty and not items:
            raise ConfigError(path, empty)
        return tuple(build(cls, item, _index(path, i)) for i, item in enumerate(items))
    return check


def integer(minimum: int = 0, maximum: Optional[int] = None) -> Check:
    """
    An integer of at least C{minimum} (and at most C{maximum}); never a
    boolean.
    """
    def check(value: object, path: str) -> int:
        number = _integer(value, path, minimum)
        if maximum is not None and number > maximum:
            raise ConfigError(path, f"must be at most {maximum} (got {number})")
        return number
    return check


def number(minimum: float = 0.0, above: bool = True) -> Check:
    """
    A finite number greater than C{minimum} (or at least C{minimum}, when
    C{above} is false); never a boolean.
    """
    return lambda value, path: _number(value, path, minimum, above)


def size(minimum: int) -> Check:
    """
    A byte count of at least C{minimum}, an integer or a size like C{"64k"}.
    """
    return lambda value, path: _size(value, path, minimum)


def seconds(zero: bool = False) -> Check:
    """
    A finite number of seconds greater than 0 (or, with C{zero}, 0 too).
    """
    def check(value: object, path: str) -> float:
        if zero and value == 0 and not isinstance(value, bool):
            return 0.0
        return _seconds(value, path)
    return check


def boolean(value: object, path: str) -> bool:
    """
    C{true} or C{false}.
    """
    return _boolean(value, path)


def string(value: object, path: str) -> str:
    """
    A string, empty or not.
    """
    return _string(value, path)


def nonempty(value: object, path: str) -> str:
    """
    A string that is not empty.
    """
    text = _string(value, path)
    if not text:
        raise ConfigError(path, "must not be empty")
    return text


def one_of(*choices: str) -> Check:
    """
    A string among C{choices}.
    """
    def check(value: object, path: str) -> str:
        text = _string(value, path)
        if text not in choices:
            raise ConfigError(path, f"must be one of {', '.join(map(repr, choices))} "
                                    f"(got {text!r})")
        return text
    return check


def either(first: str, second: str) -> Check:
    """
    One of two strings.
    """
    def check(value: object, path: str) -> str:
        text = _string(value, path)
        if text not in (first, second):
            raise ConfigError(path, f"must be {first!r} or {second!r} (got {text!r})")
        return text
    return check


def token(what: str) -> Check:
    """
    An HTTP token (a header name, a cookie name); C{what} names it in
    messages.
    """
    return lambda value, path: _token(_string(value, path), path, what)


def array(item: Callable[[str, str], Any], empty: str = "") -> Check:
    """
    An array of strings, each passed through C{item(string, path)}.

    @param empty: The problem when the array is empty, or C{''} when it
        may be.
    """
    def check(value: object, path: str) -> tuple:
        items = _strings(value, path, item)
        if empty and not items:
            raise ConfigError(path, empty)
        return items
    return check
