# -*- test-case-name: tests.test_filters_chain -*-
"""
Checking a filter's options.

Each built-in filter's factory reads its table with these, so that every
mistake is a L{ConfigError} naming the option's path
(C{listeners.web.filters[0].rate}) and the same kind of value is checked
the same way everywhere.  Third-party filters may use them too.

The checks (L{number}, L{count}, L{text} ...) are those of the
configuration schema (L{twistproxy.config.schema}): a filter may declare
its options as a dataclass of C{setting(..., check=count(1))} and read
them with L{read_options}, or read them one by one with L{OptionReader}.
"""

from __future__ import annotations

from typing import Any, Callable, List, Mapping, Optional, Sequence, Type, TypeVar

from twistproxy.config import ConfigError, is_token, key_path
from twistproxy.config.checks import _wrong_type, check_option_names
from twistproxy.config.schema import Check, build, names

_T = TypeVar("_T")


def _takes(kind: str, known: Sequence[str]) -> str:
    # The end of the message about an unknown option.
    return f"the {kind} filter takes {', '.join(known) or 'no options'}"


def needs(kind: str) -> str:
    """
    The problem of a required option left out, for C{setting(required=...)}.
    """
    return f"the {kind} filter needs this option"


def read_options(cls: Type[_T], options: Mapping[str, Any], path: str, kind: str) -> _T:
    """
    Read a filter's options declared as the settings of C{cls}.

    @param kind: The filter's name, for messages: C{'rate_limit'}.
    """
    return build(cls, options, path, takes=_takes(kind, names(cls)))


def number(minimum: float = 0.0, above: bool = True) -> Check:
    """
    A finite number greater than C{minimum} (or at least, when C{above}
    is false).
    """
    def check(value: object, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _wrong_type(path, "a number", value)
        if value != value or value in (float("inf"), float("-inf")) or (
                value <= minimum if above else value < minimum):
            raise ConfigError(path, f"must be {'greater than' if above else 'at least'} "
                                    f"{minimum:g} and finite (got {value})")
        return float(value)
    return check


def count(minimum: int = 0, maximum: Optional[int] = None) -> Check:
    """
    An integer between C{minimum} and C{maximum}; never a boolean.
    """
    def check(value: object, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _wrong_type(path, "an integer", value)
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None \
                else f"at least {minimum}"
            raise ConfigError(path, f"must be {bound} (got {value})")
        return value
    return check


def flag(value: object, path: str) -> bool:
    """
    C{true} or C{false}.
    """
    if not isinstance(value, bool):
        raise _wrong_type(path, "true or false", value)
    return value


def text(empty: bool = False) -> Check:
    """
    A string, not empty unless C{empty}.
    """
    def check(value: object, path: str) -> str:
        if not isinstance(value, str):
            raise _wrong_type(path, "a string", value)
        if not value and not empty:
            raise ConfigError(path, "must not be empty")
        return value
    return check


def texts(one: bool = True) -> Check:
    """
    An array of non-empty strings (or, with C{one}, a single string).
    """
    def check(value: object, path: str) -> List[str]:
        if isinstance(value, str) and one:
            value = [value]
        if not isinstance(value, list):
            raise _wrong_type(path, "an array of strings", value)
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item:
                raise ConfigError(f"{path}[{i}]", f"must be a non-empty string, not {item!r}")
        return list(value)
    return check


def tokens(what: str) -> Check:
    """
    An array of tokens (or a single one), such as methods or header field
    names; C{what} names one in messages: C{'method'}.
    """
    strings = texts()

    def check(value: object, path: str) -> List[str]:
        values = strings(value, path)
        for i, item in enumerate(values):
            if not is_token(item):
                raise ConfigError(f"{path}[{i}]", f"{item!r} is not a {what}")
        return values
    return check


def field_name(value: object, path: str) -> str:
    """
    One header field name.
    """
    name = text()(value, path)
    if name and not is_token(name):
        raise ConfigError(path, f"{name!r} is not a valid header field name")
    return name


def http_url(value: object, path: str) -> str:
    """
    An C{http://} or C{https://} URL.
    """
    url = text()(value, path)
    if not url.startswith(("http://", "https://")):
        raise ConfigError(path, f"must be an http:// or https:// URL, not {url!r}")
    return url


class OptionReader:
    """
    The options of one filter, read one by one.

    @ivar path: The filter's configuration path.
    """

    def __init__(self, options: Mapping[str, Any], path: str, kind: str,
                 required: Sequence[str] = (), optional: Sequence[str] = ()):
        """
        Refuse unknown options and require the C{required} ones.

        @param kind: The filter's name, for messages: C{'rate_limit'}.
        """
        known = tuple(required) + tuple(optional)
        check_option_names(options, known, path, _takes(kind, known))
        for key in required:
            if key not in options:
                raise ConfigError(key_path(path, key), needs(kind))
        self._options = options
        self.path = path

    def __contains__(self, key: str) -> bool:
        return key in self._options

    def where(self, key: str) -> str:
        """
        The path of option C{key}.
        """
        return key_path(self.path, key)

    def _read(self, key: str, default: Any, check: Callable[[object, str], Any]) -> Any:
        if key not in self._options:
            return default
        return check(self._options[key], self.where(key))

    def get(self, key: str, default: Any = None) -> Any:
        return self._options.get(key, default)

    def number(self, key: str, default: float, minimum: float = 0.0,
               above: bool = True) -> float:
        """
        A finite number greater than C{minimum} (or at least, when
        C{above} is false).
        """
        return self._read(key, default, number(minimum, above))  # type: ignore[no-any-return]

    def integer(self, key: str, default: int, minimum: int = 0,
                maximum: Optional[int] = None) -> int:
        return self._read(key, default, count(minimum, maximum))  # type: ignore[no-any-return]

    def status(self, key: str, default: int) -> int:
        """
        An HTTP status code the proxy may answer with (200 to 599).
        """
        return self.integer(key, default, 200, 599)

    def boolean(self, key: str, default: bool) -> bool:
        return self._read(key, default, flag)  # type: ignore[no-any-return]

    def string(self, key: str, default: str = "", empty: bool = False) -> str:
        return self._read(key, default, text(empty))  # type: ignore[no-any-return]

    def strings(self, key: str, one: bool = True) -> List[str]:
        """
        An array of non-empty strings (or, with C{one}, a single string).
        """
        return self._read(key, [], texts(one))  # type: ignore[no-any-return]

    def tokens(self, key: str, what: str) -> List[str]:
        """
        An array of tokens (or a single one), such as methods or header
        field names; C{what} names one in messages: C{'method'}.
        """
        return self._read(key, [], tokens(what))  # type: ignore[no-any-return]

    def field_name(self, key: str) -> str:
        """
        One header field name, or C{''} when the option is not given.
        """
        return self._read(key, "", field_name)  # type: ignore[no-any-return]

    def field_names(self, key: str) -> List[str]:
        """
        An array of header field names (or a single one).
        """
        return self.tokens(key, "valid header field name")
