# -*- test-case-name: tests.test_locators -*-
"""
Locators: where a client is, so that its requests go to nearby backends.

Global server load balancing sends each client to the backends of its own
region (and, within it, its own zone) first, and elsewhere only when those
cannot take the load (see L{twistproxy.upstream.locality}).  A I{locator}
(L{ILocator}) answers the first question of that scheme, "where is this
client?", with a C{(region, zone)} pair of the names the backends are
labelled with, for example C{('eu-west', 'eu-west-1a')}; either may be C{''}
when unknown.

Locators are plugins found by name, exactly like balancers: a configuration
file says C{[locator] type = "cidr"} and L{find_locator_factory} finds the
L{ILocatorFactory} of that C{name} among the dropins of
L{twistproxy.plugins} (or imports a dotted path), and L{build_locator} also
validates the table's other keys with it.  Three are built in:

  - C{cidr}: the client's IP address, by longest-prefix match in a table of
    networks (C{"10.1.0.0/16" = "eu-west/eu-west-1a"}).  For networks the
    operator knows: offices, data centres, a cloud provider's ranges.

  - C{header}: a request header set by a front proxy that already knows
    (C{X-Client-Region: eu-west}), believed only from the front proxies'
    own addresses, since any client can send any header.

  - C{maxmind}: a MaxMind DB file (GeoLite2 / GeoIP2 Country or City): the
    client's country or continent code, optionally mapped to region names.
    It needs the optional C{maxminddb} package
    (C{pip install 'twistproxy[geo]'}).

Every locator looks at C{request.client_address}, the connected peer.  An
IPv4 client connected to a dual-stack (IPv6) listener shows up as an
IPv4-mapped IPv6 address, C{::ffff:192.0.2.7}; locators treat it as the IPv4
address it stands for, so one table of IPv4 networks serves both kinds of
listener.

C{locate} runs for every request: the address tables are dictionaries of
integers, one per prefix length present, probed from the longest prefix to
the shortest, so a lookup costs one address parse plus at most one
dictionary probe per distinct prefix length, however many networks there are.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Tuple,
)

from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

from twistproxy.components import factory_repr, find_factory
from twistproxy.config import ConfigError, is_label, key_path
from twistproxy.config.schema import build, names, setting
from twistproxy.interfaces import IClosable, ILocator, ILocatorFactory, IRequestInfo
from twistproxy.net import Network, PrefixTable, parse_address, parse_network


UNKNOWN: Tuple[str, str] = ("", "")
"""What a locator answers for a client it cannot place."""



# --- Option helpers ---------------------------------------------------------------


def parse_locality(value: object, path: str) -> Tuple[str, str]:
    """
    Parse a locality of a configuration file: C{'region'} or
    C{'region/zone'}.

    @return: C{(region, zone)}; C{zone} is C{''} when not given.
    @raises ConfigError: when C{value} is not a string of that form: names
        are made of letters, digits, C{'.'}, C{'_'} and C{'-'}, as the
        backends' C{region} and C{zone} are.
    """
    locality = _split_locality(value)
    if locality is None:
        raise ConfigError(
            path,
            f"must be 'region' or 'region/zone' (such as 'eu-west' or "
            f"'eu-west/eu-west-1a'; letters, digits, '.', '_', '-'), not "
            f"{value!r}",
        )
    return locality


def _split_locality(value: object) -> Optional[Tuple[str, str]]:
    if not isinstance(value, str):
        return None
    region, slash, zone = value.partition("/")
    if not is_label(region) or (slash and not is_label(zone)):
        return None
    return region, zone


def _takes(kind: str, options: type) -> str:
    # The end of the message about an unknown option.
    return f"the {kind} locator takes {', '.join(names(options))}"


def _needs(kind: str) -> str:
    return f"the {kind} locator needs this option"


def _networks_list(value: object, path: str) -> List[Network]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ConfigError(
            path,
            f"must be a list of networks such as [\"10.0.0.0/8\"], not "
            f"{value!r}",
        )
    return [parse_network(item, f"{path}[{i}]") for i, item in enumerate(value)]


def _networks_table(table: object, networks_path: str) -> Tuple[Any, ...]:
    if not isinstance(table, Mapping):
        raise ConfigError(
            networks_path,
            f"must be a table of networks to localities, such as "
            f"{{ \"10.1.0.0/16\" = \"eu-west/eu-west-1a\" }}, not "
            f"{table!r}",
        )
    if not table:
        raise ConfigError(
            networks_path, "must name at least one network"
        )
    seen: Dict[Network, str] = {}
    entries = []
    for key, value in table.items():
        entry_path = key_path(networks_path, str(key))
        network = parse_network(key, entry_path)
        if network in seen:
            raise ConfigError(
                entry_path,
                f"{key!r} is the same network as {seen[network]!r}",
            )
        seen[network] = key
        entries.append((network, parse_locality(value, entry_path)))
    return tuple(entries)


def _header_name(name: object, path: str) -> str:
    if (
        not isinstance(name, str)
        or not name
        or any(c in name for c in ' \t:()<>@,;\\"/[]?={}')
        or not name.isprintable()
        or not name.isascii()
    ):
        raise ConfigError(
            path,
            f"must be a header field name such as 'X-Client-Region', "
            f"not {name!r}",
        )
    return name


def _trusted(value: object, path: str) -> List[Network]:
    trusted = _networks_list(value, path)
    if not trusted:
        raise ConfigError(
            path,
            "must name at least one network: the header is only "
            "believed from the front proxies that set it (use "
            "[\"0.0.0.0/0\", \"::/0\"] only if no client can reach the "
            "proxy directly)",
        )
    return trusted


def _database(database: object, path: str) -> str:
    if not isinstance(database, str) or not database:
        raise ConfigError(path, f"must be the path of a MaxMind DB file, not {database!r}")
    return database


def _by(by: object, path: str) -> str:
    if by not in ("country", "continent"):
        raise ConfigError(path, f"must be 'country' or 'continent', not {by!r}")
    return by  # type: ignore[return-value]


def _code_regions(table: object, path: str) -> Dict[str, Tuple[str, str]]:
    if not isinstance(table, Mapping):
        raise ConfigError(
            path,
            f"must be a table of codes to localities, such as "
            f"{{ EU = \"eu-west\" }}, not {table!r}",
        )
    return {code: parse_locality(value, key_path(path, str(code)))
            for code, value in table.items()}


@dataclass(frozen=True)
class CIDRLocatorOptions:
    """
    The options of the C{cidr} locator.

    @ivar networks: C{(network, (region, zone))} pairs.
    """

    networks: Tuple[Tuple[Network, Tuple[str, str]], ...] = setting(
        check=_networks_table, required=_needs("cidr"))


@dataclass(frozen=True)
class HeaderLocatorOptions:
    """
    The options of the C{header} locator: both required.
    """

    name: str = setting(check=_header_name, required=_needs("header"))
    trusted: List[Network] = setting(check=_trusted, required=_needs("header"))


@dataclass(frozen=True)
class MaxMindLocatorOptions:
    """
    The options of the C{maxmind} locator.
    """

    database: str = setting(check=_database, required=_needs("maxmind"))
    by: str = setting("country", check=_by)
    regions: Mapping[str, Tuple[str, str]] = setting(check=_code_regions, factory=dict)


# --- cidr -------------------------------------------------------------------------


@implementer(ILocator)
class CIDRLocator:
    """
    Locates clients by their IP address: the longest configured network
    that contains it wins.
    """

    __slots__ = ("_table",)

    def __init__(
        self, networks: Iterable[Tuple[Network, Tuple[str, str]]]
    ) -> None:
        """
        @param networks: C{(network, (region, zone))} pairs; see
            L{parse_network} and L{parse_locality}.
        """
        self._table: PrefixTable[Tuple[str, str]] = PrefixTable(networks)

    def locate(self, request: IRequestInfo) -> Tuple[str, str]:
        found = self._table.lookup(request.client_address)
        return UNKNOWN if found is None else found

    def __repr__(self) -> str:
        return f"<CIDRLocator {len(self._table)} networks>"


@implementer(ILocatorFactory, IPlugin)
class CIDRLocatorFactory:
    """
    The factory of L{CIDRLocator}.  Options::

        [locator]
        type = "cidr"
        networks = { "10.1.0.0/16" = "eu-west/eu-west-1a", "10.2.0.0/16" = "us-east" }
    """

    name = "cidr"
    help = (
        "By client IP address: the longest matching network of a table of "
        "networks to 'region' or 'region/zone'."
    )

    def fromConfig(self, options: Mapping[str, Any], path: str) -> ILocator:
        settings = build(CIDRLocatorOptions, options, path,
                         takes=_takes(self.name, CIDRLocatorOptions))
        return CIDRLocator(settings.networks)

    __repr__ = factory_repr


# --- header -----------------------------------------------------------------------


@implementer(ILocator)
class HeaderLocator:
    """
    Locates clients by a request header that a trusted front proxy sets,
    C{'region'} or C{'region/zone'}.

    The header is only believed when the connected peer is one of the
    trusted networks: any client can send any header, and a client that
    chose its own region could pick the backends it is sent to.  A value
    that is not of the form C{'region'} or C{'region/zone'} is ignored.
    """

    __slots__ = ("_name", "_trusted")

    def __init__(self, name: str, trusted: Iterable[Network]) -> None:
        """
        @param name: The header's name, in any case; e.g.
            C{'X-Client-Region'}.
        @param trusted: The networks whose peers are believed.
        """
        self._name = name
        self._trusted: PrefixTable[bool] = PrefixTable(
            (network, True) for network in trusted
        )

    def locate(self, request: IRequestInfo) -> Tuple[str, str]:
        if self._trusted.lookup(request.client_address) is None:
            return UNKNOWN
        value = request.header(self._name)
        if value is None:
            return UNKNOWN
        return _split_locality(value.strip()) or UNKNOWN

    def __repr__(self) -> str:
        return f"<HeaderLocator {self._name!r}>"


@implementer(ILocatorFactory, IPlugin)
class HeaderLocatorFactory:
    """
    The factory of L{HeaderLocator}.  Both options are required::

        [locator]
        type = "header"
        name = "X-Client-Region"
        trusted = ["10.0.0.0/8"]

    C{trusted} has no default on purpose: believing everyone would let any
    client choose its backends, and believing no one would make the locator
    useless, so the operator must say which peers set the header.
    """

    name = "header"
    help = (
        "By a request header ('region' or 'region/zone') set by a front "
        "proxy, believed only from the trusted networks."
    )

    def fromConfig(self, options: Mapping[str, Any], path: str) -> ILocator:
        settings = build(HeaderLocatorOptions, options, path,
                         takes=_takes(self.name, HeaderLocatorOptions))
        return HeaderLocator(settings.name, settings.trusted)

    __repr__ = factory_repr


# --- maxmind ------------------------------------------------------------------------


@implementer(ILocator, IClosable)
class MaxMindLocator:
    """
    Locates clients with a MaxMind DB file (GeoLite2 or GeoIP2, Country or
    City): the region is the client's country code (C{'DE'}) or continent
    code (C{'EU'}), or the region that C{regions} maps that code to.

    Lookups are cached per client address (the last few thousand), since a
    client sends many requests and the pure-Python reader takes tens of
    microseconds per lookup.

    @cvar cache_size: How many addresses' answers are remembered.
    """

    log = Logger()
    cache_size = 8192

    def __init__(
        self,
        reader: Any,
        by: str = "country",
        regions: Optional[Mapping[str, Tuple[str, str]]] = None,
    ) -> None:
        """
        @param reader: A C{maxminddb.Reader}, or anything with its C{get}
            (an address string to a record or C{None}, raising
            C{ValueError} for an invalid address) and C{close} methods.
        @param by: C{'country'} (the record's C{country.iso_code}, or
            C{registered_country.iso_code} when it has no C{country}) or
            C{'continent'} (C{continent.code}).
        @param regions: Maps codes to C{(region, zone)}; a code missing
            from it is the region itself, with no zone.
        """
        if by not in ("country", "continent"):
            raise ValueError(f"by must be 'country' or 'continent', not {by!r}")
        self._reader = reader
        self._by = by
        self._regions = dict(regions or {})
        self._cached: Callable[[str], Tuple[str, str]] = functools.lru_cache(
            maxsize=self.cache_size
        )(self._locate_address)

    def locate(self, request: IRequestInfo) -> Tuple[str, str]:
        return self._cached(request.client_address)

    def _locate_address(self, address: str) -> Tuple[str, str]:
        parsed = parse_address(address)
        if parsed is None:
            return UNKNOWN
        number, is_ipv6 = parsed
        ip = (
            ipaddress.IPv6Address(number)
            if is_ipv6
            else ipaddress.IPv4Address(number)
        )
        try:
            record = self._reader.get(ip)
        except ValueError:
            return UNKNOWN
        except Exception:
            # A corrupt database: say so, and serve the request anyway.
            self.log.failure("MaxMind DB lookup of {address} failed", address=address)
            return UNKNOWN
        code = _record_code(record, self._by)
        if not code:
            return UNKNOWN
        return self._regions.get(code) or (code, "")

    def close(self) -> None:
        """
        Close the database file.
        """
        self._reader.close()

    def __repr__(self) -> str:
        return f"<MaxMindLocator by {self._by}>"


def _record_code(record: object, by: str) -> Optional[str]:
    """
    The country or continent code of a MaxMind DB record, or C{None}.
    """
    if not isinstance(record, Mapping):
        return None
    if by == "continent":
        keys: Tuple[Tuple[str, str], ...] = (("continent", "code"),)
    else:
        keys = (("country", "iso_code"), ("registered_country", "iso_code"))
    for outer, inner in keys:
        part = record.get(outer)
        if isinstance(part, Mapping):
            code = part.get(inner)
            if isinstance(code, str) and code:
                return code
    return None


@implementer(ILocatorFactory, IPlugin)
class MaxMindLocatorFactory:
    """
    The factory of L{MaxMindLocator}.  Options::

        [locator]
        type = "maxmind"
        database = "/var/lib/GeoIP/GeoLite2-Country.mmdb"   # required
        by = "continent"                                     # or "country"
        regions = { "EU" = "eu-west", "NA" = "us-east" }     # optional

    The database is opened when the proxy starts, so a missing or corrupt
    file is a start-up error.
    """

    name = "maxmind"
    help = (
        "By a MaxMind DB file (GeoLite2/GeoIP2 Country or City): the "
        "client's country or continent code, optionally mapped to regions."
    )

    def fromConfig(self, options: Mapping[str, Any], path: str) -> ILocator:
        try:
            import maxminddb
        except ImportError:
            raise ConfigError(
                f"{path}.type",
                "the maxmind locator needs the maxminddb package: "
                "pip install 'twistproxy[geo]'",
            ) from None
        settings = build(MaxMindLocatorOptions, options, path,
                         takes=_takes(self.name, MaxMindLocatorOptions))
        database = settings.database
        try:
            reader = maxminddb.open_database(database, maxminddb.MODE_AUTO)
        except OSError as e:
            raise ConfigError(
                f"{path}.database",
                f"cannot open {database!r}: {e.strerror or e}",
            ) from None
        except (maxminddb.InvalidDatabaseError, ValueError) as e:
            raise ConfigError(
                f"{path}.database",
                f"{database!r} is not a valid MaxMind DB file: {e}",
            ) from None
        return MaxMindLocator(reader, settings.by, settings.regions)

    __repr__ = factory_repr


# --- Finding factories by name --------------------------------------------------------


def find_locator_factory(name: str, path: str) -> ILocatorFactory:
    """
    Find the locator factory that a configuration file names.

    @param name: The C{name} of a factory exported by a dropin of
        L{twistproxy.plugins} (C{'cidr'}, C{'header'}, C{'maxmind'}), or,
        when it contains a dot, the dotted path of a factory object (for
        example C{'mypkg.locators.factory'}).
    @param path: Where C{name} came from, for error messages; for example
        C{'locator.type'}.
    @raises ConfigError: when no factory has that name, when several
        plugins claim it, or when a dotted path cannot be imported or does
        not name an L{ILocatorFactory} provider.
    @return: The factory.
    """
    return find_factory(ILocatorFactory, name, path, "locator")


def build_locator(name: str, options: Mapping[str, Any], path: str) -> ILocator:
    """
    Find a locator factory by name and build a locator with it.

    @param name: As for L{find_locator_factory}: the C{type} of the
        C{[locator]} table.
    @param options: The C{[locator]} table without its C{type}.
    @param path: The configuration path of the table, C{'locator'}.  A bad
        name is reported at C{'locator.type'}, a bad option at
        C{'locator.<key>'} (for example C{'locator.networks'}).
    @raises ConfigError: when the factory cannot be found or rejects the
        options.
    @return: A new locator.
    """
    factory = find_locator_factory(name, f"{path}.type")
    return factory.fromConfig(options, path)
