"""The signaling controller's key management and ESP demultiplexing (seed 000). No I/O: the
daemon hands in datagrams with their source address and the time, and sends what comes out.

State is the live SAs, the replay cache and the lookaside cache, all in memory: a restart
costs each device one AP exchange (it learns of the restart from a Wake Up or silence).

- AP Request → verify the AP-REQ (common/kerberos/ap_exchange.py; the authenticator's keyed checksum
  covers the pktc parameters; a ticket seen before is not decrypted again,
  common/kerberos/ticket_cache.py), then the message HMAC with the ticket session key; choose the
  first of the device's suites we support; a new random sub-key in the session key's enctype;
  SA keys from it (common/pktc/esp.py); answer AP Reply. A Kerberos failure is answered with an
  Error Reply carrying the KRB-ERROR; bytes that are not a key-management message are dropped.
  A retransmitted AP Request (same bytes, same address) gets the same AP Reply (lookaside);
  the same bytes from another address are a replay (KRB_AP_ERR_REPEAT).
- The replay cache remembers an authenticator for twice the skew by the wall clock (`now`)
  *and* for twice the skew of elapsed time (`mono`): a wall clock stepped forward and back
  again must not make it forget an authenticator that the skew check would accept again.
- Admission: an AP Request whose ticket verified is refused all the same when the controller's
  own rule (`admit`, set by the daemon) says so; `revoke_client` forgets a client's SAs when
  that rule changes (and returns a Rekey to send, so the device notices at once).
- Security Parameter Recovered → confirms the newest SA of that address.
- ESP for an unknown SPI → Wake Up to the sender, unless that would amplify: only for a packet
  at least as long as the Wake Up, at most one per second per address, and at most
  `wake_up_rate` per second in all (what is held back is counted by reason); a bad ICV or a
  replay is dropped and counted.
"""

import heapq
import itertools
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from common.broker.keys import channel_secret
from common.codes import ErrorCode
from common.crypto import Key
from common.errors import KerberosError, MalformedMessage
from common.kerberos.ap_exchange import (
    KeyLookup,
    accept_ap_req,
    authenticator_fingerprint,
    build_ap_rep,
)
from common.kerberos.lookaside import Lookaside
from common.kerberos.replay import ReplayCache
from common.kerberos.ticket_cache import TicketCache
from common.messages.krb_error import encode_krb_error, error_reply
from common.messages.restriction import DeviceRestriction
from common.messages.types import PrincipalName
from common.pktc import esp, km_framing

Address = tuple[str, int]


class NoCommonSuite(KerberosError):
    code = ErrorCode.KRB_AP_ERR_METHOD


@dataclass
class ControllerSa:
    """One device's SA at the controller: inbound on `inbound.spi`, outbound to `peer`."""
    client: str
    peer: Address
    inbound: esp.InboundSa
    outbound: esp.OutboundSa
    hmac_key: bytes  # of the AP-REP sub-key: Rekey and Security Parameter Recovered
    expires: float  # monotonic seconds
    restriction: DeviceRestriction | None
    grace_s: int = 0
    confirmed: bool = False
    rekey_sent: bool = False
    channel_secret: bytes = b""  # common/broker/keys.py; only when the server is a broker


@dataclass
class KmStats:
    exchanges: dict[str, int] = field(default_factory=dict)
    esp_accepted: int = 0
    esp_bad_icv: int = 0
    esp_replay: int = 0
    esp_unknown_spi: int = 0
    esp_malformed: int = 0
    wake_ups: int = 0
    wake_ups_suppressed: dict[str, int] = field(default_factory=dict)

    def exchange(self, result: str) -> None:
        self.exchanges[result] = self.exchanges.get(result, 0) + 1


@dataclass(frozen=True)
class Exchange:
    """What one key-management datagram did, for the daemon's log line and metrics."""
    kind: str
    result: str
    reply: bytes | None
    client: str | None = None
    sa: ControllerSa | None = None


@dataclass(frozen=True, slots=True)
class PreparedSa:
    """An AP Request verified and answered (all the CPU of an exchange), for the process that
    owns the SAs to `install`: what remains is the replay check and the SA itself."""
    lookaside_key: bytes  # the request's bytes and source address
    fingerprint: bytes  # the authenticator's, for the replay cache
    client: str
    peer: Address
    spi: int  # ours (inbound)
    device_spi: int
    suite: km_framing.Suite
    to_us: esp.DirectionKeys
    to_device: esp.DirectionKeys
    hmac_key: bytes
    lifetime: int
    grace: int
    restriction: DeviceRestriction | None
    reply: bytes
    channel_secret: bytes = b""

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        # A worker pickles one per AP exchange: rebuilt by the constructor, not by
        # dataclasses' generic __setstate__ (which looks up the fields for every object).
        return PreparedSa, tuple(getattr(self, name) for name in self.__slots__)


@dataclass(frozen=True)
class EspResult:
    sa: ControllerSa | None
    payload: bytes | None  # the inner UDP datagram, when delivered
    wake_up: bytes | None  # send this to the sender's key-management address
    dropped: str | None
    suppressed: str | None = None  # why no Wake Up answered an unknown SPI


class KeyManagementServer:
    def __init__(self, *, principal: str, realm: str, keys: KeyLookup,
                 suites: tuple[esp.Suite, ...] = (esp.AES_GCM_16, esp.AES_CBC_SHA1,
                                                  esp.DES3_CBC_SHA1),
                 sa_lifetime_s: int = 3600, grace_s: int = 300, max_skew_s: int = 300,
                 ack_required: bool = True,
                 random: Callable[[int], bytes] = os.urandom,
                 spi_share: tuple[int, int] = (0, 1), ticket_cache: int = 16384,
                 wake_up_rate: float = 2000.0, broker: bool = False) -> None:
        self.principal = principal  # e.g. sigctl/sc1.lab.test
        self.broker = broker  # each SA gets its channel secret (common/broker/keys.py)
        self.realm = realm
        self.keys = keys
        self.suites = suites
        self.sa_lifetime_s = sa_lifetime_s
        self.grace_s = grace_s
        self.max_skew = timedelta(seconds=max_skew_s)
        self.ack_required = ack_required
        self.random = random
        self.replay = ReplayCache(2 * self.max_skew)  # by wall clock and elapsed time
        self.lookaside = Lookaside(window_s=2 * max_skew_s)
        self.tickets = TicketCache(ticket_cache)  # a device's ticket is opened once
        self.sas: dict[int, ControllerSa] = {}  # by our inbound SPI
        self.newest: dict[Address, ControllerSa] = {}  # by device address
        self.by_client: dict[str, ControllerSa] = {}  # newest by client principal
        self.stats = KmStats()
        self._wake_up_sent: dict[Address, float] = {}
        # A Wake Up's size is fixed by our name; the global budget is a token bucket.
        self._wake_up_size = len(km_framing.encode_wake_up(0, f"{principal}@{realm}"))
        self.wake_up_rate = wake_up_rate
        self._wake_up_tokens = wake_up_rate
        self._wake_up_refilled = 0.0
        # Key-management workers draw SPIs from disjoint shares (index, count) and remember
        # the ones they issued until the SA's end, since the SAs live in another process.
        self.spi_share = spi_share
        self._issued: dict[int, float] = {}
        # (time, tie-breaker, SA) heaps for the once-a-second sweep (rekeys_due, expire).
        self._expiries: list[tuple[float, int, ControllerSa]] = []
        self._rekey_at: list[tuple[float, int, ControllerSa]] = []
        self._sequence = itertools.count()
        # The controller's own admission rule, checked when an SA is installed (after the
        # ticket verified): raises a KerberosError to refuse the client, e.g. a device whose
        # number the provisioning service removed (common/provisioning/lines.py).
        self.admit: Callable[[str, DeviceRestriction | None], None] | None = None

    # Key management ------------------------------------------------------------------

    def receive_km(self, data: bytes, peer: Address, now: datetime, mono: float) -> Exchange:
        """One key-management datagram, start to finish (the controller without workers)."""
        return self.complete(self.prepare_km(data, peer, now, mono), data, peer, now, mono)

    def complete(self, prepared: "PreparedSa | Exchange | None", data: bytes, peer: Address,
                 now: datetime, mono: float) -> Exchange:
        """What follows `prepare_km`, in the process that owns the SAs: install a prepared
        SA, handle a message that needs the SAs (`data`), or count a refusal."""
        if isinstance(prepared, PreparedSa):
            return self.install(prepared, now, mono)
        if prepared is None:
            return self.receive_other(data, peer)
        self.stats.exchange(prepared.result)
        return prepared

    def prepare_km(self, data: bytes, peer: Address, now: datetime, mono: float
                   ) -> "PreparedSa | Exchange | None":
        """The stateless part, which key-management workers run: an AP Request verified and
        answered (PreparedSa, for `install`), or refused (an Exchange with the Error Reply);
        None for the other messages, which need the SAs (`receive_other`)."""
        try:
            framed = km_framing.decode(data)
        except MalformedMessage as exc:
            return Exchange("unknown", exc.status, None)
        message = framed.message
        if not isinstance(message, km_framing.ApRequestMsg):
            return None
        # A retransmission comes from the same address; the same bytes from elsewhere
        # are a replay and meet the replay cache (KRB_AP_ERR_REPEAT).
        key = Lookaside.key(f"{peer[0]}:{peer[1]}|".encode() + data)
        cached = self.lookaside.get(key, mono)
        if cached is not None:
            return Exchange("ap_request", "RETRANSMIT", cached)
        binding = km_framing.ap_request_binding(message.server_nonce, message.spi, message.suites,
                                          message.reestablish)
        try:
            accepted = accept_ap_req(message.ap_req, keys=self.keys, now=now,
                                     max_skew=self.max_skew, replay=None, binding=binding,
                                     tickets=self.tickets)
            km_framing.verify_hmac(framed, km_framing.hmac_key(accepted.session_key))
            suite = next((esp.SUITES[s] for s in message.suites
                          if s in esp.SUITES and esp.SUITES[s] in self.suites), None)
            if suite is None:
                raise NoCommonSuite("NO_COMMON_CIPHERSUITE")
            if message.spi < 256:
                raise MalformedMessage("RESERVED_SPI", str(message.spi))
        except KerberosError as exc:
            return Exchange("ap_request", exc.status, self._error(exc, now))
        spi = self._free_spi(mono)
        subkey = Key.random(accepted.session_key.enctype, self.random)
        to_us, to_device = esp.derive_sa_keys(subkey, suite, message.spi, spi)
        ticket_left = int((accepted.ticket.endtime - now).total_seconds())
        lifetime = max(1, min(self.sa_lifetime_s, ticket_left))
        grace = min(self.grace_s, lifetime // 2)
        hmac_key = km_framing.hmac_key(subkey)
        reply = km_framing.encode_ap_reply(build_ap_rep(accepted, subkey), spi, suite.pktc,
                                           lifetime, grace, message.reestablish,
                                           self.ack_required, hmac_key)
        self._issued[spi] = mono + lifetime
        return PreparedSa(key, authenticator_fingerprint(accepted.ap_req), accepted.client,
                          peer, spi, message.spi, suite.pktc, to_us, to_device, hmac_key,
                          lifetime, grace, accepted.restriction, reply,
                          channel_secret(subkey) if self.broker else b"")

    def install(self, prepared: PreparedSa, now: datetime, mono: float) -> Exchange:
        """The stateful part, in the process that owns the SAs: the replay cache, then the SA
        (a retransmission answered meanwhile gets the reply already sent)."""
        cached = self.lookaside.get(prepared.lookaside_key, mono)
        if cached is not None:
            self.stats.exchange("RETRANSMIT")
            return Exchange("ap_request", "RETRANSMIT", cached)
        if prepared.spi in self.sas:  # a worker's SPI still in use here: the device retries
            self.stats.exchange("spi_in_use")
            return Exchange("ap_request", "SPI_IN_USE", None, prepared.client)
        try:
            if self.admit is not None:
                self.admit(prepared.client, prepared.restriction)
            self.replay.check_and_add(prepared.fingerprint, now, mono)
        except KerberosError as exc:
            self.stats.exchange(exc.status)
            return Exchange("ap_request", exc.status, self._error(exc, now), prepared.client)
        suite = esp.SUITES[prepared.suite]
        sa = ControllerSa(prepared.client, prepared.peer,
                          esp.InboundSa(prepared.spi, suite, prepared.to_us),
                          esp.OutboundSa(prepared.device_spi, suite, prepared.to_device,
                                         self.random),
                          prepared.hmac_key, mono + prepared.lifetime, prepared.restriction,
                          prepared.grace, channel_secret=prepared.channel_secret)
        previous = self.newest.get(sa.peer)
        self.sas[sa.inbound.spi] = sa
        self.newest[sa.peer] = sa
        self.by_client[sa.client] = sa
        self._schedule(sa)
        if previous is not None and previous.client == sa.client:
            # Packets already in flight on the old SA still arrive for a few seconds.
            previous.expires = min(previous.expires, mono + 10)
            heapq.heappush(self._expiries, (previous.expires, next(self._sequence), previous))
        self.lookaside.put(prepared.lookaside_key, prepared.reply, mono)
        self.stats.exchange("OK")
        return Exchange("ap_request", "OK", prepared.reply, sa.client, sa)

    def receive_other(self, data: bytes, peer: Address) -> Exchange:
        """Key-management messages other than AP Request (already framed correctly)."""
        framed = km_framing.decode(data)
        message = framed.message
        if isinstance(message, km_framing.SecParamRecovered):
            sa = self.newest.get(peer)
            try:
                if sa is None:
                    raise MalformedMessage("NO_SA_FOR_PEER")
                km_framing.verify_hmac(framed, sa.hmac_key)
            except KerberosError as exc:
                self.stats.exchange("spr_" + exc.status.lower())
                return Exchange("sec_param_recovered", exc.status, None)
            sa.confirmed = True
            return Exchange("sec_param_recovered", "OK", None, sa.client, sa)
        # Wake Up, AP Reply, Rekey and Error Reply travel the other way: ignore.
        self.stats.exchange("unexpected")
        return Exchange(type(message).__name__, "UNEXPECTED", None)

    def _error(self, exc: KerberosError, now: datetime) -> bytes:
        return km_framing.encode_error_reply(encode_krb_error(error_reply(
            exc, realm=self.realm, sname=PrincipalName(2, tuple(self.principal.split("/"))),
            now=now)))

    def allocate_spi(self, mono: float, lifetime_s: float) -> int:
        """An inbound SPI for an SA negotiated elsewhere (an enterprise phone's registration,
        common/enterprise/registration.py), held for `lifetime_s` like an AP exchange's."""
        spi = self._free_spi(mono)
        self._issued[spi] = mono + lifetime_s
        return spi

    def _free_spi(self, mono: float) -> int:
        """A random SPI of this process's share (`spi_share`: index, count), not in use here
        nor issued by this process for an SA still alive."""
        if len(self._issued) > 2 * len(self.sas) + 65_536:
            self._issued = {spi: end for spi, end in self._issued.items() if end > mono}
        index, count = self.spi_share
        while True:
            spi = 256 + (secrets.randbelow(0xFFFFFF00 // count) * count + index)
            if spi not in self.sas and self._issued.get(spi, 0.0) <= mono:
                return spi

    # ESP -----------------------------------------------------------------------------

    def receive_esp(self, packet: bytes, peer: Address, mono: float) -> EspResult:
        try:
            spi = esp.spi_of(packet)
        except MalformedMessage as exc:
            self.stats.esp_malformed += 1
            return EspResult(None, None, None, exc.status)
        sa = self.sas.get(spi)
        if sa is None or sa.expires <= mono:
            self.stats.esp_unknown_spi += 1
            return self._wake_up(len(packet), peer, mono)
        try:
            next_header, payload = sa.inbound.open(packet)
        except esp.EspDropped as exc:
            if exc.status == "ESP_REPLAY":
                self.stats.esp_replay += 1
            else:
                self.stats.esp_bad_icv += 1
            return EspResult(sa, None, None, exc.status)
        except MalformedMessage as exc:
            self.stats.esp_malformed += 1
            return EspResult(sa, None, None, exc.status)
        if next_header != esp.NEXT_HEADER_UDP:
            self.stats.esp_malformed += 1
            return EspResult(sa, None, None, "NOT_UDP")
        self.stats.esp_accepted += 1
        if sa.peer != peer:  # the device's address changed (NAT rebinding): follow it
            if self.newest.get(sa.peer) is sa:
                del self.newest[sa.peer]
                self.newest[peer] = sa
            sa.peer = peer
        return EspResult(sa, payload, None, None)

    def _wake_up(self, size: int, peer: Address, mono: float) -> EspResult:
        """A Wake Up for an ESP packet of `size` bytes with an unknown SPI, from `peer`. The
        packet is unauthenticated and its source may be spoofed, so the answer must amplify
        nothing: it goes only to a packet at least as long as itself (devices pad their
        probes; runtime/controller_link.py), at most once per second per address (ip, port),
        and within a global budget of `wake_up_rate` per second."""
        suppressed = None
        if size < self._wake_up_size:
            suppressed = "short"
        elif mono - self._wake_up_sent.get(peer, -10.0) < 1.0:
            suppressed = "per_source"
        else:
            self._wake_up_tokens = min(self.wake_up_rate, self._wake_up_tokens + (
                mono - self._wake_up_refilled) * self.wake_up_rate)
            self._wake_up_refilled = mono
            if self._wake_up_tokens < 1.0:
                suppressed = "global"
            else:
                self._wake_up_tokens -= 1.0
        if suppressed is not None:
            counts = self.stats.wake_ups_suppressed
            counts[suppressed] = counts.get(suppressed, 0) + 1
            return EspResult(None, None, None, "UNKNOWN_SPI", suppressed)
        self._wake_up_sent[peer] = mono
        if len(self._wake_up_sent) > 100_000:
            self._wake_up_sent.clear()
        self.stats.wake_ups += 1
        wake_up = km_framing.encode_wake_up(secrets.randbits(32),
                                            f"{self.principal}@{self.realm}")
        return EspResult(None, None, wake_up, "UNKNOWN_SPI")

    def seal(self, sa: ControllerSa, inner: bytes) -> bytes:
        return sa.outbound.seal(inner)

    def rekeys_due(self, now: datetime, mono: float) -> list[tuple[ControllerSa, bytes]]:
        """Rekey messages (HMAC with the SA's sub-key) for SAs the device has not replaced by
        half their grace period before the end: the device re-keys at the start of the grace
        period itself, so a Rekey means it missed that. Only the SAs due are looked at (a
        heap by due time), not every SA: the daemon asks once a second."""
        due = []
        while self._rekey_at and self._rekey_at[0][0] <= mono:
            _, _, sa = heapq.heappop(self._rekey_at)
            if sa.rekey_sent or mono >= sa.expires or self.newest.get(sa.peer) is not sa:
                continue  # replaced, expired, or already sent
            due.append((sa, self.rekey(sa, now)))
        return due

    def rekey(self, sa: ControllerSa, now: datetime) -> bytes:
        """A Rekey for `sa` (HMAC with its sub-key): the device starts a new AP exchange."""
        sa.rekey_sent = True
        return km_framing.encode_rekey(
            secrets.randbits(32), f"{self.principal}@{self.realm}", now, sa.inbound.spi,
            tuple(s.pktc for s in self.suites), self.sa_lifetime_s, self.grace_s, False,
            sa.hmac_key)

    def revoke_client(self, client: str, now: datetime) -> list[tuple[ControllerSa, bytes]]:
        """Forget every SA of `client` (its admission was withdrawn); returns a Rekey for
        each address it used, HMAC'd with that SA's sub-key, so that the device starts an AP
        exchange at once (which `admit` then refuses) instead of at its next packet."""
        gone = [sa for sa in self.sas.values() if sa.client == client]
        rekeys = []
        for sa in gone:
            del self.sas[sa.inbound.spi]
            if self.newest.get(sa.peer) is sa:
                del self.newest[sa.peer]
                rekeys.append((sa, self.rekey(sa, now)))
            if self.by_client.get(sa.client) is sa:
                del self.by_client[sa.client]
        return rekeys

    def expire(self, mono: float) -> int:
        """Forget SAs whose lifetime is over; returns how many went (a heap by expiry: only
        the SAs due are looked at)."""
        gone = 0
        while self._expiries and self._expiries[0][0] <= mono:
            _, _, sa = heapq.heappop(self._expiries)
            if sa.expires > mono or self.sas.get(sa.inbound.spi) is not sa:
                continue  # an entry from before its expiry was brought forward, or gone
            del self.sas[sa.inbound.spi]
            if self.newest.get(sa.peer) is sa:
                del self.newest[sa.peer]
            if self.by_client.get(sa.client) is sa:
                del self.by_client[sa.client]
            gone += 1
        return gone

    def _schedule(self, sa: ControllerSa) -> None:
        """Heap entries for the SA's end and its Rekey time (entries made stale by a later
        change are skipped when they come up)."""
        heapq.heappush(self._expiries, (sa.expires, next(self._sequence), sa))
        heapq.heappush(self._rekey_at, (sa.expires - sa.grace_s / 2, next(self._sequence), sa))
