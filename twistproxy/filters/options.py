# -*- test-case-name: tests.test_filters_chain -*-
"""
Checking a filter's options.

Each built-in filter's factory reads its table with these, so that every
mistake is a L{ConfigError} naming the option's path
(C{listeners.web.filters[0].rate}) and the same kind of value is checked
the same way everywhere.  Third-party filters may use them too.

The checks (L{number}, L{count}, L{text} ...) are those of the
configuration schema (L{twistproxy.config.schema}), so that a mistake in a
filter's options reads exactly as the same mistake in the proxy's own: a
filter may declare its options as a dataclass of C{setting(...,
check=count(1))} and read them with L{read_options}, or read them one by
one with L{OptionReader}.
"""

from __future__ import annotations

from typing import Any, Callable, List, Mapping, Optional, Sequence, Type, TypeVar

from twistproxy.config import ConfigError, key_path
from twistproxy.config.checks import check_option_names, wrong_type
from twistproxy.config.schema import (
    Check, boolean, build, integer, names, nonempty, number, string, token,
)

__all__ = [
    "OptionReader", "count", "field_name", "flag", "http_url", "needs", "number",
    "read_options", "text", "texts", "tokens",
]

_T = TypeVar("_T")

# An integer between a minimum and an optional maximum; never a boolean.
count = integer
# true or false.
flag = boolean
# One header field name.
field_name = token("header name")


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


def text(empty: bool = False) -> Check:
    """
    A string, not empty unless C{empty}.
    """
    return string if empty else nonempty


def texts(one: bool = True) -> Check:
    """
    An array of non-empty strings (or, with C{one}, a single string).
    """
    def check(value: object, path: str) -> List[str]:
        if isinstance(value, str) and one:
            value = [value]
        if not isinstance(value, list):
            raise wrong_type(path, "a string or an array of strings" if one
                             else "an array of strings", value)
        return [nonempty(item, f"{path}[{i}]") for i, item in enumerate(value)]
    return check


def tokens(what: str) -> Check:
    """
    An array of tokens (or a single one), such as methods or header field
    names; C{what} names one in messages: C{'method'}.
    """
    strings = texts()
    one = token(what)

    def check(value: object, path: str) -> List[str]:
        return [one(item, f"{path}[{i}]") for i, item in enumerate(strings(value, path))]
    return check


def http_url(value: object, path: str) -> str:
    """
    An C{http://} or C{https://} URL.
    """
    url = nonempty(value, path)
    if not url.startswith(("http://", "https://")):
        raise ConfigError(path, f"must be an http:// or https:// URL (got {url!r})")
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
        return self.tokens(key, "header name")
