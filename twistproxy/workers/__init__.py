# -*- test-case-name: tests.test_workers -*-
"""
Several worker processes behind one set of listening sockets.

With C{workers = N} (or C{--workers N}; C{"auto"} is one per CPU core) the
process that C{twistd} runs becomes a I{master}: it binds every listener's
socket itself, then starts N workers, each a Python process running
C{python -m twistproxy.workers}, which inherit the sockets as file
descriptors (C{childFDs}) and adopt them (C{IReactorSocket.adoptStreamPort}).
The kernel hands each new connection to one of the workers that wait on
the shared socket, so a worker that dies takes only its own connections
with it; the master starts a new one, after a pause that doubles while
workers keep dying young (a crash loop must not spin).

The master serves no requests.  It

  - forwards signals: C{SIGHUP} and C{POST /reload} (after the master has
    checked the file itself: a broken one never reaches the workers; one
    that changes listeners makes the master bind the new sockets, start a
    new generation of workers with them and drain the old one),
    C{SIGUSR1} (reopen the access log), C{SIGTERM} (graceful shutdown; a
    second one ends it at once); it waits for the workers to finish
    draining before it exits, and kills those still there after
    C{shutdown.drain} and a few seconds more;

  - serves the admin API and the metrics (C{[admin]}) once for all: each
    worker runs its own admin API on a private Unix socket in a directory
    only the master's user can enter, and the master asks every worker and
    sums their answers up (L{twistproxy.metrics.combine});

  - orders and renews the ACME certificates for all
    (L{twistproxy.workers.master.Master.renewals}): it writes the
    challenge answers into that directory, where every worker reads them
    when the CA asks (L{twistproxy.acme.challenges.ChallengeFiles}), and
    has every worker reload once a new certificate is stored;

  - logs for all: a worker writes its log events to its standard error as
    JSON lines, and the master publishes them into its own log with the
    worker's number as their system (C{[worker-1]}).

Workers read the configuration from a copy the master writes into that
directory, which it replaces only when a reload has been checked: a worker
started again later runs what the others run, even if the file was edited
since.  A worker whose master is gone (its standard input closes) shuts
down.

Only C{tcp:}, C{tcp6:} and C{systemd:} (socket activation: the master
passes on the socket systemd gave it) listeners can be shared; with another
endpoint type (C{unix:}, C{ssl:}) the configuration is refused with
C{workers} above 1.  TLS is unaffected: a listener's C{tls} table is
terminated in the workers.
"""
