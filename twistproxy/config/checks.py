# -*- test-case-name: tests.test_config -*-
"""
The checks that configuration values go through.

Each check takes the raw value that tomllib produced and the path of that
value inside the file, and either returns the value (converted: seconds as
a float, a size string as bytes, a URL split into its parts) or raises
L{ConfigError}C{(path, problem)}.  L{twistproxy.config.parse} adds the
source file name, so the checks never need to know it.  The public ones
(L{key_path}, L{describe_value}, L{wrong_type}, L{did_you_mean},
L{is_token}, L{is_label}) serve plugin factories that read their own
options.
"""

from __future__ import annotations

import datetime as _datetime
import difflib as _difflib
import ipaddress as _ipaddress
import json as _json
import os as _os
import re as _re
from typing import Any, Callable, Collection, Dict, List, Mapping, Optional, Tuple, TypeVar
from urllib.parse import urlsplit as _urlsplit


class ConfigError(Exception):
    """
    A configuration is invalid.

    @ivar source: The file name (or C{'<string>'}), or C{None}.
    @ivar path: The dotted path of the offending setting inside the file,
        for example C{'upstreams.api.servers[2].url'}; empty for the file as
        a whole.
    @ivar problem: What is wrong, as a sentence fragment.
    """

    def __init__(self, path: str, problem: str, source: Optional[str] = None):
        self.source = source
        self.path = path
        self.problem = problem
        super().__init__(path, problem, source)

    def __str__(self) -> str:
        where = ": ".join(p for p in (self.source, self.path) if p)
        return f"{where}: {self.problem}" if where else self.problem


_T = TypeVar("_T")

# RFC 9110 section 5.6.2: token = 1*tchar.  Field names and methods are tokens.
_TOKEN = _re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")


def is_token(value: str) -> bool:
    """
    Whether C{value} is an HTTP token (RFC 9110 5.6.2): a method, a field
    name, a cookie name.  For plugins that check their own options.
    """
    return _TOKEN.match(value) is not None
# Listener and upstream group names appear in logs and metrics labels, so
# they are kept to characters that need no quoting anywhere.
_NAME = _re.compile(r"[A-Za-z0-9_.\-]+\Z")
# A key that TOML accepts without quotes; any other key is shown quoted in a
# path, so that the path stays unambiguous ("upstreams."api.v2".servers").
_BARE_KEY = _re.compile(r"[A-Za-z0-9_\-]+\Z")
# One label of a host name: letters, digits, '-' and '_' (the underscore is
# not valid in host names but common in internal DNS, so it is tolerated).
_HOST_LABEL = _re.compile(r"[a-z0-9_\-]+\Z")
_LABEL = _re.compile(r"[A-Za-z0-9_.\-]+\Z").match
_DNS_LABEL = _re.compile(r"[A-Za-z0-9_\-]+\Z").match
_SIZE = _re.compile(r"([0-9]+)([kmg]?)\Z", _re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}

# Server URL schemes, and the kind of listener a group of them serves.
_KIND = {"http": "http", "https": "http", "tcp": "tcp", "udp": "udp"}
_PROTOCOLS = ("http", "tcp", "udp", "dns")
_PROXY_PROTOCOL_VERSIONS = ("v1", "v2")


def key_path(parent: str, key: str) -> str:
    """
    The path of C{key} inside the table at C{parent}, quoted as TOML would
    when it is not a bare key (C{'locator.networks."10.0.0.0/8"'}).  For
    plugin factories that check their own options.
    """
    if not _BARE_KEY.match(key):
        key = _json.dumps(key)
    return f"{parent}.{key}" if parent else key


def is_label(value: str) -> bool:
    """
    Whether C{value} is a valid non-empty region or zone name: letters,
    digits, C{'.'}, C{'_'} and C{'-'}.  Locators use it so that they cannot
    produce a name that no backend could have.
    """
    return _LABEL(value) is not None


def _index(parent: str, i: int) -> str:
    """
    The path of item C{i} of the array at C{parent}.
    """
    return f"{parent}[{i}]"


def describe_value(value: object) -> str:
    """
    Name the TOML type of C{value} for an error message: C{"an integer"},
    C{"a table"} ...  For plugin factories that check their own options.
    """
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, (_datetime.date, _datetime.time)):
        return "a date/time"
    return type(value).__name__  # pragma: no cover


def wrong_type(path: str, expected: str, value: object) -> ConfigError:
    """
    The error of a value of the wrong type: C{must be an integer, not a
    string}.  For plugin factories that check their own options.

    @param expected: What the value must be, with its article: C{'an
        integer'}.
    """
    return ConfigError(path, f"must be {expected}, not {describe_value(value)}")


def _table(value: object, path: str, known: Tuple[str, ...]) -> Dict[str, Any]:
    """
    Check that C{value} is a table whose keys are all in C{known}.
    """
    if not isinstance(value, dict):
        raise wrong_type(path, "a table", value)
    for key in value:
        if key not in known:
            raise ConfigError(key_path(path, key), f"unknown key {key!r}{did_you_mean(key, known)}")
    return value


def did_you_mean(key: str, known: Collection[str]) -> str:
    """
    The end of an "unknown key" message: the known keys that C{key} may
    have meant, as C{" (did you mean 'path_prefix'?)"}, or C{""} when none
    is near.  For plugin factories that check their own options.

    A known key is near when it is spelt nearly the same (C{'wieght'}:
    C{'weight'}), or when C{key}, three characters or more, begins it or
    one of its words (C{'path'} and C{'prefix'}: C{'path_prefix'};
    C{'budget'}: C{'retry_budget'}).  At most three are named, the closest
    spellings first.
    """
    names = [str(name) for name in known]
    near = _difflib.get_close_matches(key, names, n=3)
    if len(key) >= 3:
        start = key.lower()
        near += [
            name for name in names
            if name not in near
            and any(word.startswith(start) for word in [name] + _re.split(r"[_\-]", name))
        ]
    if not near:
        return ""
    quoted = [repr(name) for name in near[:3]]
    if len(quoted) > 1:
        quoted[-2:] = [f"{quoted[-2]} or {quoted[-1]}"]
    return f" (did you mean {', '.join(quoted)}?)"


def _string(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise wrong_type(path, "a string", value)
    return value


def _boolean(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise wrong_type(path, "a boolean (true or false)", value)
    return value


def _integer(value: object, path: str, minimum: int) -> int:
    # bool is a subclass of int: "max_idle = true" must not mean 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise wrong_type(path, "an integer", value)
    if value < minimum:
        raise ConfigError(path, f"must be at least {minimum} (got {value})")
    return value


def _number(value: object, path: str, minimum: float = 0.0, above: bool = True,
            what: str = "a number") -> float:
    """
    A finite number greater than C{minimum} (or at least C{minimum}, when
    C{above} is false); C{what} names it in messages (C{'a number of
    seconds'}).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise wrong_type(path, what, value)
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(path, f"must be a finite {what.partition(' ')[2]} (got {value})")
    if value <= minimum if above else value < minimum:
        bound = "greater than" if above else "at least"
        raise ConfigError(path, f"must be {bound} {minimum:g} (got {value})")
    return float(value)


def _seconds(value: object, path: str) -> float:
    return _number(value, path, what="a number of seconds")


def _size(value: object, path: str, minimum: int) -> int:
    """
    A byte count: an integer, or a string of digits with an optional binary
    suffix C{k}, C{m} or C{g} (C{"64k"} is 65536).
    """
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match is None:
            raise ConfigError(
                path,
                f"must be a number of bytes or a size like \"64k\", \"10m\" "
                f"or \"1g\" (got {value!r})",
            )
        value = int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    elif isinstance(value, bool) or not isinstance(value, int):
        raise wrong_type(path, "a number of bytes or a size string like \"64k\"", value)
    if value < minimum:
        raise ConfigError(path, f"must be at least {minimum} bytes (got {value})")
    return value


def _array(value: object, path: str) -> List[Any]:
    if not isinstance(value, list):
        raise wrong_type(path, "an array", value)
    return value


def _strings(value: object, path: str, check: Callable[[str, str], _T]) -> Tuple[_T, ...]:
    """
    An array of strings, each passed through C{check(string, path)}.
    """
    result = []
    for i, item in enumerate(_array(value, path)):
        item_path = _index(path, i)
        result.append(check(_string(item, item_path), item_path))
    return tuple(result)


def _name(value: str, path: str, what: str) -> str:
    if not _NAME.match(value):
        raise ConfigError(
            path,
            f"invalid {what} name {value!r}: use only letters, digits, "
            f"'_', '.' and '-'",
        )
    return value


def _token(value: str, path: str, what: str) -> str:
    if not _TOKEN.match(value):
        raise ConfigError(path, f"{what} {value!r} is not a valid HTTP token")
    return value


def _field_value(value: object, path: str) -> str:
    value = _string(value, path)
    if any(c in value for c in "\r\n\0"):
        raise ConfigError(path, "header value must not contain CR, LF or NUL")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise ConfigError(
            path, "header value must be ASCII (or Latin-1): HTTP/1.1 carries bytes"
        ) from None
    return value


def _is_ip(host: str, kind: Callable[[str], Any] = _ipaddress.ip_address) -> bool:
    try:
        kind(host)
    except ValueError:
        return False
    return True


def _is_ipv6(host: str) -> bool:
    return _is_ip(host, _ipaddress.IPv6Address)


def _host_name(host: str, path: str, allow_wildcard: bool) -> str:
    """
    Check a DNS name or IPv4 address (already lower-cased).
    """
    labels = host.split(".")
    if allow_wildcard and labels[0] == "*":
        if len(labels) < 2:
            raise ConfigError(
                path,
                f"invalid host {host!r}: a wildcard needs a domain after it, "
                f"as in '*.example.com'",
            )
        labels = labels[1:]
    for label in labels:
        if not label:
            raise ConfigError(path, f"invalid host {host!r}: empty label between dots")
        if "*" in label:
            if not allow_wildcard:
                raise ConfigError(
                    path, f"invalid host {host!r}: a server cannot be a wildcard"
                )
            raise ConfigError(
                path,
                f"invalid host {host!r}: '*' is only allowed as the whole "
                f"first label, as in '*.example.com'",
            )
        if not _HOST_LABEL.match(label):
            raise ConfigError(
                path,
                f"invalid host {host!r}: only letters, digits, '-', '_' and "
                f"'.' are allowed",
            )
    return host


def _route_host(value: str, path: str) -> str:
    """
    A host of a route: a DNS name, a leading-label wildcard, an IPv4 address
    or a bracketed IPv6 address, matched against the host part of the
    request's Host field.
    """
    if not value:
        raise ConfigError(path, "host must not be empty")
    if any(c.isspace() for c in value):
        raise ConfigError(path, f"invalid host {value!r}: must not contain whitespace")
    host = value.lower()
    if host.startswith("["):
        if _re.search(r"\]:[0-9]*\Z", host):
            raise ConfigError(
                path,
                f"invalid host {value!r}: a route matches host names without a "
                f"port; remove the port",
            )
        if not (host.endswith("]") and _is_ipv6(host[1:-1])):
            raise ConfigError(path, f"invalid host {value!r}: not an IPv6 address")
        return host
    if ":" in host:
        if _is_ipv6(host):
            raise ConfigError(
                path,
                f"invalid host {value!r}: write an IPv6 address in brackets, "
                f"as in '[::1]'",
            )
        raise ConfigError(
            path,
            f"invalid host {value!r}: a route matches host names without a "
            f"port; remove the port",
        )
    return _host_name(host, path, allow_wildcard=True)


def _server_url(value: str, path: str) -> Tuple[str, str, str, int]:
    """
    Split a backend URL into (canonical url, scheme, host, port).

    The canonical URL is lower-cased and has no trailing C{/}; an explicit
    port is kept even when it is the scheme's default.
    """
    lowered = value.lower()
    for scheme in _KIND:
        if lowered.startswith(scheme + "://"):
            break
    else:
        raise ConfigError(path, "must be an http:// or https:// URL")
    if any(c.isspace() or ord(c) < 32 or c == "\x7f" for c in value):
        raise ConfigError(
            path, f"{value!r} must not contain whitespace or control characters"
        )
    authority = _re.split(r"[/?#]", value[len(scheme) + 3 :], maxsplit=1)[0]
    if authority.count(":") > 1 and not authority.startswith("["):
        raise ConfigError(
            path,
            f"write the IPv6 address in {value!r} in brackets, as in "
            f"'http://[::1]:8080'",
        )
    if authority.startswith("["):
        # Checked here because urlsplit's own check differs between Python
        # versions.
        if "]" not in authority:
            raise ConfigError(path, f"invalid host in {value!r}: missing ']'")
        literal, _, rest = authority[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise ConfigError(
                path, f"invalid host in {value!r}: only ':port' may follow ']'"
            )
        if not _is_ipv6(literal):
            raise ConfigError(path, f"invalid host in {value!r}: not an IPv6 address")
    try:
        parts = _urlsplit(value)
        port = parts.port
    except ValueError as e:
        if "port" in str(e).lower():
            raise ConfigError(
                path, f"invalid port in {value!r}: must be a number from 1 to 65535"
            ) from None
        raise ConfigError(path, f"invalid URL {value!r}: {e}") from None
    netloc = parts.netloc
    if "@" in netloc:
        raise ConfigError(path, f"{value!r} must not contain a user name or password")
    if not parts.hostname:
        raise ConfigError(path, f"{value!r} must name a host")
    if netloc.endswith(":"):
        raise ConfigError(path, f"invalid port in {value!r}: the port is empty")
    if port is not None and not 1 <= port <= 65535:
        raise ConfigError(
            path, f"invalid port in {value!r}: must be a number from 1 to 65535"
        )
    if parts.path not in ("", "/"):
        raise ConfigError(
            path,
            f"{value!r} must not have a path ({parts.path!r}); requests are "
            f"forwarded with their own path",
        )
    if "?" in value or "#" in value:
        raise ConfigError(path, f"{value!r} must not have a query or fragment")
    # urlsplit has already lower-cased the host and removed the brackets.
    host = parts.hostname
    if netloc.startswith("["):
        shown = f"[{host}]"
    else:
        shown = _host_name(host, path, allow_wildcard=False)
    canonical = f"{scheme}://{shown}"
    if port is None:
        if _KIND[scheme] != "http":
            raise ConfigError(path, f"{value!r} must have a port: {scheme}:// has no default")
        port = 443 if scheme == "https" else 80
    else:
        canonical += f":{port}"
    return canonical, scheme, host, port


def _label(value: object, path: str) -> str:
    # Region and zone names: what a person would type, nothing that needs
    # quoting in logs.
    value = _string(value, path)
    if value and not _LABEL(value):
        raise ConfigError(path, f"{value!r} is not a valid name (letters, digits, '.', '_', '-')")
    return value


# A name server: an IPv4 address, or an IPv6 address in brackets, with an
# optional port.
_NAMESERVER = _re.compile(r"(?:\[([^\]]*)\]|([^:\[\]]+))(?::([0-9]{1,5}))?\Z")


def _nameserver(value: str, path: str) -> Tuple[str, int]:
    match = _NAMESERVER.match(value)
    if match is None:
        if _is_ipv6(value):
            raise ConfigError(path, f"write the IPv6 address {value!r} in brackets, "
                                    f"as in '[{value}]' or '[{value}]:53'")
        raise ConfigError(path, f"{value!r} is not an IP address with an optional port "
                                f"('127.0.0.1:5353', '[::1]:53', '10.0.0.2')")
    v6, v4, port = match.groups()
    if v6 is not None and not _is_ipv6(v6):
        raise ConfigError(path, f"{v6!r} is not an IPv6 address")
    if v4 is not None and not _is_ip(v4, _ipaddress.IPv4Address):
        # A name server by name would need a resolver to find it.
        raise ConfigError(path, f"{v4!r} is not an IP address (name servers are "
                                f"given by address)")
    number = 53 if port is None else int(port)
    if not 1 <= number <= 65535:
        raise ConfigError(path, f"port must be from 1 to 65535 (got {number})")
    return (str(_ipaddress.ip_address(v6 if v6 is not None else v4)), number)


def _fraction(value: object, path: str, allow_zero: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise wrong_type(path, "a number between 0 and 1", value)
    if not (0 <= value <= 1) or (value == 0 and not allow_zero):
        raise ConfigError(path, f"must be between 0 and 1 (got {value})")
    return float(value)


def _path_prefix(value: object, path: str) -> str:
    prefix = _string(value, path)
    if not prefix.startswith("/"):
        raise ConfigError(path, f"must start with '/' (got {prefix!r})")
    if any(c.isspace() or ord(c) < 32 or c == "\x7f" for c in prefix):
        raise ConfigError(
            path, f"must not contain whitespace or control characters (got {prefix!r})"
        )
    if "?" in prefix or "#" in prefix:
        raise ConfigError(path, f"must be a path without '?' or '#' (got {prefix!r})")
    return prefix


def _network(value: str, path: str) -> str:
    try:
        return str(_ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ConfigError(
            path,
            f"{value!r} is not an IP address or network (such as "
            f"'10.0.0.0/8' or '::1')",
        )


def workers_count(value: object, path: str = "workers") -> int:
    """
    How many worker processes C{value} asks for: an integer of at least 1,
    or C{"auto"} for one per CPU core.  For the C{workers} key and the
    C{--workers} option.

    @raises ConfigError: naming C{path}.
    """
    if value == "auto":
        return _os.cpu_count() or 1
    if isinstance(value, bool) or not isinstance(value, int):
        raise wrong_type(path, 'an integer or "auto"', value)
    return _integer(value, path, 1)


def _pseudonym(value: object, path: str) -> str:
    # The Via pseudonym: a token, or '' for no Via field.
    via = _string(value, path)
    if via:
        _token(via, path, "pseudonym")
    return via


def _log_path(value: object, path: str) -> str:
    log_path = _string(value, path)
    if "\0" in log_path:
        raise ConfigError(path, "must not contain NUL")
    return log_path


def _endpoint(value: object, path: str) -> str:
    endpoint = _string(value, path)
    if not endpoint.strip() or "\0" in endpoint:
        raise ConfigError(path, "must be a non-empty endpoint string")
    return endpoint


def _regions(value: object, path: str) -> Tuple[str, ...]:
    # Regions in order of preference: each named once.
    regions = _strings(value, path, _label)
    for i, region in enumerate(regions):
        if not region:
            raise ConfigError(_index(path, i), "must not be empty")
        if region in regions[:i]:
            raise ConfigError(_index(path, i), f"{region!r} is listed twice")
    return regions


def _overprovisioning(value: object, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise wrong_type(path, "a number of at least 1", value)
    if not 1 <= value <= 100:
        raise ConfigError(path, f"must be between 1 and 100 (got {value})")
    return float(value)


# The parts of a request URI a cache key may be made of.
_KEY_PARTS = ("scheme", "host", "path", "query")


def _key_part(name: str, path: str) -> str:
    if name not in _KEY_PARTS:
        raise ConfigError(path, f"unknown key part {name!r}; use {', '.join(_KEY_PARTS)}")
    return name


def _lower_token(name: str, path: str) -> str:
    # A header name, lower-cased as the code compares them.
    return _token(name, path, "header name").lower()


def _method(name: str, path: str) -> str:
    return _token(name, path, "method").upper()


def _cached_method(name: str, path: str) -> str:
    if name.upper() not in ("GET", "HEAD", "POST"):
        raise ConfigError(path, f"only GET, HEAD and POST responses can be cached (got {name!r})")
    return name.upper()


def _route_hosts(value: object, path: str) -> Tuple[str, ...]:
    # One host, or an array of them.
    if isinstance(value, str):
        return (_route_host(value, path),)
    if isinstance(value, list):
        return _strings(value, path, _route_host)
    raise wrong_type(path, "a string or an array of strings", value)


def check_server_name(host: str, path: str) -> str:
    """
    A name a TLS client may send in SNI (lower-cased), or a wildcard
    (C{*.example.com}); a L{ConfigError} at C{path} otherwise.
    """
    return _host_name(host.lower(), path, allow_wildcard=True)


def _tls_version(value: object, path: str) -> str:
    version = _string(value, path)
    if version not in ("1.2", "1.3"):
        raise ConfigError(path, 'must be "1.2" or "1.3"')
    return version


def _listener_endpoint(value: object, path: str) -> str:
    endpoint = _string(value, path)
    if not endpoint.strip():
        raise ConfigError(path, "must not be empty")
    if "\0" in endpoint:
        raise ConfigError(path, "must not contain NUL")
    return endpoint


def _options(value: object, path: str) -> Dict[str, Any]:
    # A plugin's own table of options, which its factory checks.
    if not isinstance(value, dict):
        raise wrong_type(path, "a table", value)
    return dict(value)


def _proxy_protocol_version(value: object, path: str) -> str:
    version = _string(value, path)
    if version not in _PROXY_PROTOCOL_VERSIONS:
        raise ConfigError(path, f'must be "v1" or "v2" (got {version!r})')
    return version


def check_option_names(
    options: Mapping[str, Any], allowed: Collection[str], path: str, takes: str
) -> None:
    """
    Reject the first option, in sorted order, that a plugin does not take.

    @param options: The options a configuration gives the plugin.
    @param allowed: The names it takes.
    @param path: The configuration path of C{options}; the error is
        reported at C{<path>.<key>}, the key quoted as in L{key_path}.
    @param takes: What the plugin takes, for the end of the message: C{'the
        tcp health check takes timeout, port'}.
    @raises ConfigError: C{unknown option 'x' (did you mean 'y'?); <takes>}.
    """
    unknown = sorted((key for key in options if key not in allowed), key=str)
    if not unknown:
        return
    key = unknown[0]
    problem = f"unknown option {key!r}{did_you_mean(str(key), allowed)}"
    raise ConfigError(key_path(path, str(key)), f"{problem}; {takes}")
