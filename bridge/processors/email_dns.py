"""The DNS resolver of `validation`'s deliverability checks (email-validator asks it for MX, A,
AAAA and TXT records, from a worker thread).

A domain whose DNS never answers must not hold the thread: each query ends within
BRIDGE_EMAIL_DNS_TIMEOUT_S and by the run's deadline. Queries go to the system's resolvers, or to
BRIDGE_EMAIL_DNS_SERVERS; a workflow author chooses only the names asked, never the server.
"""

from __future__ import annotations

import time

import dns.name
import dns.nameserver
import dns.rdataclass
import dns.rdatatype
import dns.resolver

from bridge.settings import Settings, dns_server


class DeadlineResolver(dns.resolver.Resolver):
    """dnspython's resolver, each query's lifetime the smaller of the setting and the time left;
    answers are cached for the run."""

    def __init__(self, settings: Settings, deadline: float | None) -> None:
        super().__init__(configure=not settings.email_dns_servers)
        if settings.email_dns_servers:
            self.nameservers = [
                dns.nameserver.Do53Nameserver(*dns_server(entry))
                for entry in settings.email_dns_servers
            ]
        self.cache = dns.resolver.LRUCache()
        self._bound = settings.email_dns_timeout_s
        self._deadline = deadline

    def resolve(  # dnspython's signature, the lifetime bounded
        self,
        qname: dns.name.Name | str,
        rdtype: dns.rdatatype.RdataType | str = dns.rdatatype.A,
        rdclass: dns.rdataclass.RdataClass | str = dns.rdataclass.IN,
        tcp: bool = False,
        source: str | None = None,
        raise_on_no_answer: bool = True,
        source_port: int = 0,
        lifetime: float | None = None,
        search: bool | None = None,
    ) -> dns.resolver.Answer:
        bound = self._bound if lifetime is None else min(lifetime, self._bound)
        if self._deadline is not None:
            # Past the deadline: 0, a timeout at once (email-validator calls it "unknown"), and
            # the batch stops before the next item.
            bound = max(0.0, min(bound, self._deadline - time.monotonic()))
        return super().resolve(
            qname, rdtype, rdclass, tcp, source, raise_on_no_answer, source_port, bound, search
        )
