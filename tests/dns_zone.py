# A twisted.names zone for the DNS end-to-end tests (read by
# PySourceAuthority, not imported).
zone = [
    SOA(  # noqa: F821
        "example.test", mname="ns.example.test", rname="root.example.test",
        serial=1, refresh=60, retry=60, expire=60, minimum=60,
    ),
    A("www.example.test", "192.0.2.80"),  # noqa: F821
]
