"""
Tests for basic_auth (htpasswd files of bcrypt hashes) and forward_auth
(an auth service asked about each request, here a twisted.web resource
served in memory by L{treq.testing.RequestTraversalAgent}).
"""

from __future__ import annotations

import base64
import os

import bcrypt
from treq.testing import RequestTraversalAgent
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface.verify import verifyObject

from twistproxy.config import ConfigError
from twistproxy.filters.auth import BasicAuthFactory, ForwardAuthFactory, ForwardAuthFilter
from twistproxy.filters.chain import FilterChain
from twistproxy.interfaces import IRequestFilter
from twistproxy.testing import make_exchange, run_filters


def _basic(user: str, password: str) -> tuple:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return ("Authorization", f"Basic {token}")


def _hash(password: str) -> str:
    # The lowest cost: the tests check the logic, not bcrypt's slowness.
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


class BasicAuthTests(SynchronousTestCase):
    """
    basic_auth against an htpasswd file.
    """

    def setUp(self):
        self.clock = Clock()
        self.path = self.mktemp()
        self._write(f"# users\nalice:{_hash('wonderland')}\nbob:{_hash('builder')}\n")
        self.filter = BasicAuthFactory().fromConfig(
            self.clock, {"htpasswd": self.path, "realm": 'the "shop"',
                         "user_header": "X-Remote-User"}, "f")

    def _write(self, text):
        with open(self.path, "w") as f:
            f.write(text)
        os.utime(self.path, (self.clock.seconds(), self.clock.seconds()))

    def test_interface(self):
        """
        It provides L{IRequestFilter}.
        """
        verifyObject(IRequestFilter, self.filter)

    def test_refused(self):
        """
        No credentials, another scheme, garbage, an unknown user or a
        wrong password: 401 with the realm.
        """
        for headers in ([], [("Authorization", "Bearer x")],
                        [("Authorization", "Basic !!!")],
                        [_basic("carol", "wonderland")], [_basic("alice", "builder")]):
            x = make_exchange(headers=headers)
            self.assertFalse(run_filters([self.filter], x), headers)
            self.assertEqual(x.downstream.status, 401)
            self.assertEqual(x.downstream.field(b"WWW-Authenticate"),
                             b'Basic realm="the \\"shop\\"", charset="UTF-8"')
            self.assertEqual(x.reason, "auth_required")

    def test_accepted(self):
        """
        Valid credentials pass; the backend gets the user in
        C{user_header} (not the client's own value), and no credentials.
        """
        x = make_exchange(headers=[_basic("alice", "wonderland"),
                                   ("X-Remote-User", "admin")])
        self.assertTrue(run_filters([self.filter], x))
        names = [n.lower() for n, _ in x.request.headers]
        self.assertNotIn(b"authorization", names)
        self.assertEqual(names.count(b"x-remote-user"), 1)
        self.assertIn((b"X-Remote-User", b"alice"), x.request.headers)

    def test_keep_authorization(self):
        """
        With C{keep_authorization}, the credentials go on to the backend;
        without C{user_header}, a client's C{X-Remote-User} is not touched.
        """
        f = BasicAuthFactory().fromConfig(
            self.clock, {"htpasswd": self.path, "keep_authorization": True}, "f")
        credentials = _basic("alice", "wonderland")
        x = make_exchange(headers=[credentials, ("X-Remote-User", "admin")])
        self.assertTrue(run_filters([f], x))
        self.assertIn((b"Authorization", credentials[1].encode()), x.request.headers)
        self.assertIn((b"X-Remote-User", b"admin"), x.request.headers)

    def test_bad_user_header(self):
        """
        C{user_header} is one field name: an array (whose further names
        used to be ignored) or a name that is no token is refused with its
        path.
        """
        for value in (["X-User", "X-Other"], "X User", 1):
            with self.assertRaises(ConfigError) as e:
                BasicAuthFactory().fromConfig(
                    self.clock, {"htpasswd": self.path, "user_header": value}, "f")
            self.assertEqual(e.exception.path, "f.user_header", value)

    def test_remembered(self):
        """
        A successful check is remembered: the same credentials again do
        not run bcrypt again.
        """
        calls = []
        real = bcrypt.checkpw
        self.patch(bcrypt, "checkpw", lambda *a: calls.append(a) or real(*a))
        for _ in range(3):
            self.assertTrue(run_filters([self.filter], make_exchange(
                headers=[_basic("bob", "builder")])))
        self.assertEqual(len(calls), 1)

    def test_reloaded(self):
        """
        A changed file is read again: a new password works, the old one
        no longer does.
        """
        self.clock.advance(10)
        self._write(f"alice:{_hash('looking-glass')}\n")
        self.clock.advance(10)
        self.assertTrue(run_filters([self.filter], make_exchange(
            headers=[_basic("alice", "looking-glass")])))
        self.assertFalse(run_filters([self.filter], make_exchange(
            headers=[_basic("alice", "wonderland")])))

    def test_bad_files(self):
        """
        A hash that is not bcrypt, a malformed bcrypt hash (which would
        make each check fail with a 500), a line without a hash, or a
        missing file are refused at start-up with the line or option path.
        """
        self._write("alice:$apr1$abc$def\n")
        with self.assertRaises(ConfigError) as e:
            BasicAuthFactory().fromConfig(self.clock, {"htpasswd": self.path}, "f")
        self.assertEqual(e.exception.path, f"{self.path}:1")
        self.assertIn("bcrypt", e.exception.problem)
        self._write("bob:%s\nalice:$2y$10$cut.short\n" % _hash("x"))
        with self.assertRaises(ConfigError) as e:
            BasicAuthFactory().fromConfig(self.clock, {"htpasswd": self.path}, "f")
        self.assertEqual(e.exception.path, f"{self.path}:2")
        self._write("alice\n")
        with self.assertRaises(ConfigError) as e:
            BasicAuthFactory().fromConfig(self.clock, {"htpasswd": self.path}, "f")
        self.assertEqual(e.exception.path, f"{self.path}:1")
        with self.assertRaises(ConfigError) as e:
            BasicAuthFactory().fromConfig(self.clock, {"htpasswd": "/nonexistent"}, "f")
        self.assertEqual(e.exception.path, "f.htpasswd")


class _AuthService(Resource):
    """
    Lets through requests with C{X-Token: good}, telling who the user is;
    refuses others with a 401 and a body; never answers C{X-Token: slow}.
    """

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.seen = []

    def render_GET(self, request):
        self.seen.append(request)
        token = request.getHeader("X-Token")
        if token == "good":
            request.setHeader("X-User", "alice")
            return b"ok"
        if token == "slow":
            return NOT_DONE_YET
        if token == "login":
            request.addCookie(b"session", b"alice")
            request.setHeader("X-User", "alice")
            return b"ok"
        if request.getCookie(b"session") == b"alice":
            request.setHeader("X-User", "alice")
            return b"ok"
        request.setResponseCode(401)
        request.setHeader("WWW-Authenticate", 'Bearer realm="api"')
        request.setHeader("Content-Type", "text/plain")
        return b"who are you?"


class ForwardAuthTests(SynchronousTestCase):
    """
    forward_auth, with the auth service in memory.
    """

    def setUp(self):
        self.clock = Clock()
        self.service = _AuthService()
        self.agent = RequestTraversalAgent(self.service)
        self.filter = ForwardAuthFilter(self.clock, "http://auth.test/check", ["X-User"], 2.0,
                                        agent=self.agent)

    def _ask(self, headers):
        x = make_exchange(target="/orders?id=3", method="GET", headers=headers)
        passed = []
        FilterChain([self.filter]).run(x, passed.append)
        self.agent.flush()
        return x, bool(passed)

    def test_interface(self):
        """
        It provides L{IRequestFilter}.
        """
        verifyObject(IRequestFilter, self.filter)

    def test_allowed_copies_headers(self):
        """
        A 2xx lets the request through with the chosen fields copied from
        the answer, replacing what the client sent; the service was told
        what the request is.
        """
        x, passed = self._ask([("X-Token", "good"), ("X-User", "mallory")])
        self.assertTrue(passed)
        users = [v for n, v in x.request.headers if n.lower() == b"x-user"]
        self.assertEqual(users, [b"alice"])
        asked = self.service.seen[0]
        self.assertEqual(asked.getHeader("X-Forwarded-Uri"), "/orders?id=3")
        self.assertEqual(asked.getHeader("X-Forwarded-Method"), "GET")
        self.assertEqual(asked.getHeader("X-Forwarded-For"), "192.0.2.7")
        self.assertEqual(asked.getHeader("X-Token"), "good")

    def test_refusal_passed_back(self):
        """
        Any other answer goes back to the client: status, fields, body.
        """
        x, passed = self._ask([("X-Token", "bad")])
        self.assertFalse(passed)
        sink = x.downstream
        self.assertEqual(sink.status, 401)
        self.assertEqual(sink.field(b"WWW-Authenticate"), b'Bearer realm="api"')
        self.assertEqual(sink.body, b"who are you?")
        self.assertEqual(x.reason, "auth_refused")

    def test_no_cookies_kept(self):
        """
        A cookie the service set in its answer to one client is not sent
        when asking about the next, who has none: that one is refused.
        """
        _, passed = self._ask([("X-Token", "login")])
        self.assertTrue(passed)
        x, passed = self._ask([])
        self.assertFalse(passed)
        self.assertEqual(x.downstream.status, 401)
        self.assertIsNone(self.service.seen[-1].getHeader("Cookie"))
        _, passed = self._ask([("Cookie", "session=alice")])
        self.assertTrue(passed)

    def test_refusal_fields(self):
        """
        A refusal carries the service's fields but not its framing (the
        proxy frames the answer: one C{Content-Length}) and no empty
        C{Content-Encoding}.
        """
        x, _ = self._ask([("X-Token", "bad")])
        names = [n.lower() for n, _ in x.downstream.fields]
        self.assertIn(b"content-type", names)
        self.assertEqual(names.count(b"content-length"), 1)
        for name in (b"content-encoding", b"transfer-encoding"):
            self.assertNotIn(name, names)

    def test_timeout(self):
        """
        An auth service that does not answer in time gets the client a
        503.
        """
        x, passed = self._ask([("X-Token", "slow")])
        self.assertIsNone(x.downstream.status)
        self.clock.advance(2.0)
        self.assertEqual(x.downstream.status, 503)
        self.assertFalse(passed)
        self.assertEqual(x.reason, "auth_unavailable")

    def test_bad_options(self):
        """
        A URL is required and must be http(s).
        """
        for options, where in [({}, "f.url"), ({"url": "ftp://x"}, "f.url"),
                               ({"url": "http://a", "timeout": 0}, "f.timeout"),
                               ({"url": "http://a", "copy_headers": ["X Y"]},
                                "f.copy_headers[0]")]:
            with self.assertRaises(ConfigError) as e:
                ForwardAuthFactory().fromConfig(self.clock, options, "f")
            self.assertEqual(e.exception.path, where, options)
