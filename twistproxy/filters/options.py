# -*- test-case-name: tests.test_filters_chain -*-
"""
Checking a filter's options.

Each built-in filter's factory reads its table with these, so that every
mistake is a L{ConfigError} naming the option's path
(C{listeners.web.filters[0].rate}) and the same kind of value is checked
the same way everywhere.  Third-party filters may use them too.
"""

from __future__ import annotations

from typing import Any, List, Mapping, Optional, Sequence

from twistproxy.components import check_option_names
from twistproxy.config import ConfigError, describe_value, is_token, key_path


class Options:
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
        check_option_names(options, known, path,
                           f"the {kind} filter takes {', '.join(known) or 'no options'}")
        for key in required:
            if key not in options:
                raise ConfigError(key_path(path, key), f"the {kind} filter needs this option")
        self._options = options
        self.path = path

    def __contains__(self, key: str) -> bool:
        return key in self._options

    def where(self, key: str) -> str:
        """
        The path of option C{key}.
        """
        return key_path(self.path, key)

    def _wrong(self, key: str, expected: str) -> ConfigError:
        value = self._options[key]
        return ConfigError(self.where(key), f"must be {expected}, not {describe_value(value)}")

    def get(self, key: str, default: Any = None) -> Any:
        return self._options.get(key, default)

    def number(self, key: str, default: float, minimum: float = 0.0,
               above: bool = True) -> float:
        """
        A finite number greater than C{minimum} (or at least, when
        C{above} is false).
        """
        if key not in self._options:
            return default
        value = self._options[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._wrong(key, "a number")
        if value != value or value in (float("inf"), float("-inf")) or (
                value <= minimum if above else value < minimum):
            raise ConfigError(self.where(key),
                              f"must be {'greater than' if above else 'at least'} "
                              f"{minimum:g} and finite (got {value})")
        return float(value)

    def integer(self, key: str, default: int, minimum: int = 0,
                maximum: Optional[int] = None) -> int:
        if key not in self._options:
            return default
        value = self._options[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._wrong(key, "an integer")
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None \
                else f"at least {minimum}"
            raise ConfigError(self.where(key), f"must be {bound} (got {value})")
        return value

    def status(self, key: str, default: int) -> int:
        """
        An HTTP status code the proxy may answer with (200 to 599).
        """
        return self.integer(key, default, 200, 599)

    def boolean(self, key: str, default: bool) -> bool:
        if key not in self._options:
            return default
        value = self._options[key]
        if not isinstance(value, bool):
            raise self._wrong(key, "true or false")
        return value

    def string(self, key: str, default: str = "", empty: bool = False) -> str:
        if key not in self._options:
            return default
        value = self._options[key]
        if not isinstance(value, str):
            raise self._wrong(key, "a string")
        if not value and not empty:
            raise ConfigError(self.where(key), "must not be empty")
        return value

    def strings(self, key: str, one: bool = True) -> List[str]:
        """
        An array of non-empty strings (or, with C{one}, a single string).
        """
        if key not in self._options:
            return []
        value = self._options[key]
        if isinstance(value, str) and one:
            value = [value]
        if not isinstance(value, list):
            raise self._wrong(key, "an array of strings")
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item:
                raise ConfigError(f"{self.where(key)}[{i}]",
                                  f"must be a non-empty string, not {item!r}")
        return list(value)

    def tokens(self, key: str, what: str) -> List[str]:
        """
        An array of tokens (or a single one), such as methods or header
        field names; C{what} names one in messages: C{'method'}.
        """
        values = self.strings(key)
        for i, value in enumerate(values):
            if not is_token(value):
                raise ConfigError(f"{self.where(key)}[{i}]", f"{value!r} is not a {what}")
        return values

    def field_name(self, key: str) -> str:
        """
        One header field name, or C{''} when the option is not given.
        """
        name = self.string(key)
        if name and not is_token(name):
            raise ConfigError(self.where(key), f"{name!r} is not a valid header field name")
        return name

    def field_names(self, key: str) -> List[str]:
        """
        An array of header field names (or a single one).
        """
        return self.tokens(key, "valid header field name")
