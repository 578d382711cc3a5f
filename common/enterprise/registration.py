"""Seed 002, FIG. 4: the registration of an enterprise phone with the application server (in
telekey the signaling controller, acting as gatekeeper), both sides, with no I/O. Messages
are common/enterprise/ras.py's; keys common/enterprise/keys.py's.

    phone                                    controller                       key server
    GRQ(g, Re, EXT, CV_m, ICV_Ka) ------->   (K_g cached per g, else) ------> GET /v1/kg
                                             <------------------------------- K_g, CV_m
                              <-------------  GCF(Rg, Re, ICV_Ka)
    RRQ(Rg, Re, SPI_p, suites, ICV_Ka) --->
                              <-------------  RCF(session ID, Re, Rg, SPI_c, suite, ICV_Ka)
    both: K_s = HMAC(K_g, C_b|PIN|Re|Rg); ESP keys = derive_sa_keys(Key(E, K_s), suite,
          SPI_p, SPI_c), E = aes256-cts-hmac-sha384-192 (default) or aes128-cts-hmac-sha1-96
          (seed profile): the same derivation as an AP exchange's sub-key (docs/protocol.md §7).

Controller (`Gatekeeper`): `begin` takes a datagram and says what it needs: nothing (a drop,
a reply), or K_g for the GRQ's g (`KeyRequest`), which the daemon fetches and hands to
`finish_grq`. Refusals are silent except GRJ (seed: a bad ICV gets no answer; a replay gets
no answer): CV_m not current or g unknown to the key server → GRJ stale-key-information;
an extension not administered here → GRJ with the alternates. Rg is random, single use and
lives `challenge_lifetime_s`; a GRQ must be dated within `max_skew_s` and is remembered (its
g and Re) for twice that, so a replayed GRQ or RRQ meets silence. An exact retransmission
(same bytes, same address) gets the reply already sent. After `lockout_failures` refusals
(bad ICV, replay, token missing, unknown extension) from one IP address within
`lockout_s`, everything from it is ignored for `lockout_s`.

Phone (`PhoneRegistration`): `grq` (a new Re each time), `receive` (GCF → the RRQ to send,
RCF → the SA, GRJ → the reason and alternates). The daemon owns timers, retries and the
key file.
"""

import os
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol

from common.crypto import Key
from common.enterprise.keys import (
    IcvMismatch,
    Profile,
    auth_key,
    session_key,
)
from common.enterprise.ras import (
    NOT_HOMED,
    STALE_KEY,
    Gcf,
    Grj,
    Grq,
    MissingToken,
    Rcf,
    Received,
    Rrq,
    Token,
    decode_message,
    encode_message,
    verify_message,
)
from common.errors import KerberosError, MalformedMessage
from common.kerberos.lookaside import Lookaside
from common.kerberos.replay import Replay, ReplayCache
from common.pktc import esp, km_framing
from common.pktc.km_client import ClientSa

Address = tuple[str, int]
SESSION_ENCTYPE = {Profile.DEFAULT: 20, Profile.SEED: 17}  # RFC 8009 / RFC 3962 enctypes


def session_sa_key(ks: bytes, profile: Profile) -> Key:
    """K_s as the protocol key the SA keys come from: aes256-cts-hmac-sha384-192 (RFC 8009)
    for the default profile's 32 bytes, aes128-cts-hmac-sha1-96 (RFC 3962) for the seed
    profile's 16; its PRF+ then cuts the ESP keys exactly as for an AP-REP sub-key."""
    return Key(SESSION_ENCTYPE[profile], ks)


def derive_registration_sa(ks: bytes, profile: Profile, suite: esp.Suite, phone_spi: int,
                           controller_spi: int) -> tuple[esp.DirectionKeys, esp.DirectionKeys]:
    """(phone→controller, controller→phone) keys: common/pktc/esp.py's derive_sa_keys with
    the phone as initiator."""
    return esp.derive_sa_keys(session_sa_key(ks, profile), suite, phone_spi, controller_spi)


def registration_hmac_key(ks: bytes, profile: Profile) -> bytes:
    """The PacketCable HMAC key of the SA (Rekey from the controller): km_framing.hmac_key of
    the same Key."""
    return km_framing.hmac_key(session_sa_key(ks, profile))


def _timestamp(now: datetime) -> int:
    return max(1, int(now.timestamp()))


# --- the controller ---------------------------------------------------------------------------

class PinStore(Protocol):
    """The extensions administered at the controller and their PINs."""

    def pin(self, ext: str) -> str | None: ...


@dataclass(frozen=True)
class GatekeeperPolicy:
    gatekeeper_id: str
    profile: Profile
    ras_address: Address  # in GCF
    esp_address: Address  # in RCF (callSignalAddress)
    suites: tuple[esp.Suite, ...] = (esp.AES_GCM_16, esp.AES_CBC_SHA1, esp.DES3_CBC_SHA1)
    sa_lifetime_s: int = 3600
    grace_s: int = 300
    max_skew_s: int = 300
    challenge_lifetime_s: float = 30.0
    lockout_failures: int = 5
    lockout_s: float = 300.0
    alternates: tuple[Address, ...] = ()


@dataclass(frozen=True)
class KeyRequest:
    """A GRQ waiting for K_g of its generator (the daemon asks the key server for (g, EXT))."""

    received: Received
    grq: Grq
    peer: Address
    data: bytes

    @property
    def generator(self) -> bytes:
        assert self.grq.token.generator is not None  # decode_message insists
        return self.grq.token.generator


@dataclass(frozen=True)
class KeyAnswer:
    """What the key server said for (g, EXT): K_g under the current K_m and its CV_m, or
    None when it refused (g unknown, of another extension, revoked)."""

    generator_key: bytes | None
    check_value: bytes | None


@dataclass(frozen=True)
class Registration:
    """A phone registered: what the controller installs as its SA."""

    ext: str
    peer: Address
    session_id: str
    phone_spi: int
    controller_spi: int
    suite: esp.Suite
    to_us: esp.DirectionKeys
    to_phone: esp.DirectionKeys
    hmac_key: bytes
    lifetime_s: int
    grace_s: int
    fingerprint: bytes  # Rg: unique per registration, for the replay cache


@dataclass(frozen=True)
class Outcome:
    """What one datagram did: for the log line and metrics, and what to send."""

    kind: str  # grq, rrq, ras (another RAS message or garbage)
    result: str  # OK, GRJ_STALE_KEY, GRJ_NOT_HOMED, BAD_ICV, REPLAY, LOCKED_OUT, ...
    reply: bytes | None = None
    ext: str | None = None
    need_key: KeyRequest | None = None
    need_spi: "SpiRequest | None" = None
    registration: Registration | None = None
    locked_out: bool = False  # this refusal locked the address out


@dataclass
class _Challenge:
    ext: str
    pin: str
    re: bytes
    auth_key: bytes
    generator_key: bytes
    peer: Address
    expires: float  # monotonic


@dataclass(frozen=True)
class SpiRequest:
    """An RRQ verified, waiting for the controller's inbound SPI (the daemon allocates it
    where the SAs are)."""

    rrq: Rrq
    challenge: _Challenge
    rg: bytes
    suite: esp.Suite
    peer: Address
    lookaside_key: bytes


@dataclass
class _Failures:
    times: list[float] = field(default_factory=list)
    locked_until: float = 0.0


COUNTED = frozenset({"BAD_ICV", "WRONG_ICV_ALGORITHM", "REPLAY", "STALE_TIMESTAMP",
                     "MISSING_TOKEN", "INCOMPLETE_TOKEN", "BAD_TOKEN", "UNKNOWN_EXTENSION",
                     "NO_CHALLENGE", "WRONG_GATEKEEPER", "WRONG_SENDER"})


class Gatekeeper:
    def __init__(self, policy: GatekeeperPolicy, pins: PinStore, *,
                 random: Callable[[int], bytes] = os.urandom) -> None:
        self.policy = policy
        self.pins = pins
        self.random = random
        self.challenges: dict[bytes, _Challenge] = {}  # by Rg
        self.replay = ReplayCache(timedelta(seconds=2 * policy.max_skew_s))
        self.lookaside = Lookaside(window_s=policy.challenge_lifetime_s)
        self.in_flight: set[bytes] = set()  # GRQs (address and bytes) waiting for K_g
        self.failures: dict[str, _Failures] = {}
        self.lockouts = 0

    # Lockout -------------------------------------------------------------------------

    def locked_out(self, peer: Address, mono: float) -> bool:
        entry = self.failures.get(peer[0])
        return entry is not None and entry.locked_until > mono

    def _fail(self, kind: str, status: str, peer: Address, mono: float,
              ext: str | None = None) -> Outcome:
        """A silent refusal; the ones that may be guesses count towards the lockout."""
        locked = False
        if status in COUNTED:
            entry = self.failures.setdefault(peer[0], _Failures())
            entry.times = [t for t in entry.times if t > mono - self.policy.lockout_s]
            entry.times.append(mono)
            if len(entry.times) >= self.policy.lockout_failures:
                entry.locked_until = mono + self.policy.lockout_s
                entry.times.clear()
                self.lockouts += 1
                locked = True
            if len(self.failures) > 100_000:
                self.failures = {ip: e for ip, e in self.failures.items()
                                 if e.locked_until > mono or e.times}
        return Outcome(kind, status, None, ext, locked_out=locked)

    # Datagrams -----------------------------------------------------------------------

    def begin(self, data: bytes, peer: Address, now: datetime, mono: float) -> Outcome:
        """One datagram to the RAS port."""
        if self.locked_out(peer, mono):
            return Outcome("ras", "LOCKED_OUT")
        key = f"{peer[0]}:{peer[1]}|".encode() + data
        cached = self.lookaside.get(key, mono)
        if cached is not None:
            return Outcome("ras", "RETRANSMIT", cached)
        if key in self.in_flight:
            return Outcome("grq", "IN_PROGRESS")
        try:
            received = decode_message(data)
        except MissingToken as exc:
            return self._fail("ras", exc.status, peer, mono)
        except MalformedMessage as exc:
            return Outcome("ras", exc.status)
        message = received.message
        if isinstance(message, Grq):
            if self.pins.pin(message.ext) is None and not self.policy.alternates:
                return self._fail("grq", "UNKNOWN_EXTENSION", peer, mono, message.ext)
            self.in_flight.add(key)
            return Outcome("grq", "NEED_KEY", ext=message.ext,
                           need_key=KeyRequest(received, message, peer, data))
        if isinstance(message, Rrq):
            return self._rrq(received, message, peer, key, now, mono)
        return Outcome("ras", "UNEXPECTED_" + type(message).__name__.upper())

    def finish_grq(self, request: KeyRequest, answer: KeyAnswer, now: datetime,
                   mono: float) -> Outcome:
        """The GRQ once the key server answered for its (g, EXT)."""
        grq, peer = request.grq, request.peer
        key = f"{peer[0]}:{peer[1]}|".encode() + request.data
        self.in_flight.discard(key)
        if self.locked_out(peer, mono):
            return Outcome("grq", "LOCKED_OUT", ext=grq.ext)
        if answer.generator_key is None or answer.check_value != grq.token.check_value:
            # The phone's key information is stale (K_m rotated) or unknown: seed FIG. 4,
            # it must fetch a new key file. Nothing secret is told.
            reply = encode_message(Grj(grq.seq, self.policy.gatekeeper_id, STALE_KEY,
                                       re=grq.token.re))
            return Outcome("grq", "GRJ_STALE_KEY", reply, grq.ext)
        pin = self.pins.pin(grq.ext)
        if pin is None:
            reply = encode_message(Grj(grq.seq, self.policy.gatekeeper_id, NOT_HOMED,
                                       self.policy.alternates, grq.token.re))
            outcome = self._fail("grq", "UNKNOWN_EXTENSION", peer, mono, grq.ext)
            return replace(outcome, result="GRJ_NOT_HOMED", reply=reply)
        profile = self.policy.profile
        ka = auth_key(answer.generator_key, pin, profile)
        try:
            verify_message(request.received, ka, profile)
            if grq.token.senders_id != grq.ext:
                raise IcvMismatch("WRONG_SENDER")
            skew = abs(now.timestamp() - grq.token.timestamp)
            if skew > self.policy.max_skew_s:
                raise Replay("STALE_TIMESTAMP", f"{skew:.0f} s")
            assert grq.token.generator is not None and grq.token.re is not None
            self.replay.check_and_add(b"grq|" + grq.token.generator + grq.token.re, now, mono)
        except KerberosError as exc:
            return self._fail("grq", exc.status, peer, mono, grq.ext)
        rg = self.random(16)
        self._expire(mono)
        self.challenges[rg] = _Challenge(grq.ext, pin, grq.token.re, ka, answer.generator_key,
                                         peer, mono + self.policy.challenge_lifetime_s)
        token = Token(_timestamp(now), grq.seq, self.policy.gatekeeper_id, grq.ext,
                      re=grq.token.re, rg=rg)
        reply = encode_message(Gcf(grq.seq, self.policy.gatekeeper_id, self.policy.ras_address,
                                   token), ka, profile)
        self.lookaside.put(key, reply, mono)
        return Outcome("grq", "OK", reply, grq.ext)

    def _rrq(self, received: Received, rrq: Rrq, peer: Address, key: bytes, now: datetime,
             mono: float) -> Outcome:
        assert rrq.token.rg is not None and rrq.token.re is not None
        self._expire(mono)
        challenge = self.challenges.get(rrq.token.rg)
        if challenge is None or challenge.re != rrq.token.re or challenge.ext != rrq.ext:
            # Rg unknown, used already or expired: a replay (or a guess).
            return self._fail("rrq", "NO_CHALLENGE" if challenge is None else "REPLAY", peer,
                              mono, rrq.ext)
        profile = self.policy.profile
        try:
            verify_message(received, challenge.auth_key, profile)
            if rrq.gatekeeper_id != self.policy.gatekeeper_id \
                    or rrq.token.general_id != self.policy.gatekeeper_id:
                raise IcvMismatch("WRONG_GATEKEEPER")
        except KerberosError as exc:
            return self._fail("rrq", exc.status, peer, mono, rrq.ext)
        del self.challenges[rrq.token.rg]  # single use
        suite = next((esp.SUITES[s] for s in rrq.suites
                      if s in esp.SUITES and esp.SUITES[s] in self.policy.suites), None)
        if suite is None or rrq.spi < 256:
            return Outcome("rrq", "NO_COMMON_SUITE" if suite is None else "RESERVED_SPI",
                           ext=rrq.ext)
        return Outcome("rrq", "NEED_SPI", ext=rrq.ext, need_spi=SpiRequest(
            rrq, challenge, rrq.token.rg, suite, peer, key))

    def finish_rrq(self, request: "SpiRequest", controller_spi: int, now: datetime,
                   mono: float) -> Outcome:
        """The RRQ once the daemon allocated our inbound SPI: derive K_s and the SA keys,
        answer RCF."""
        rrq, challenge, rg, suite = request.rrq, request.challenge, request.rg, request.suite
        profile = self.policy.profile
        ks = session_key(challenge.generator_key, challenge.pin, challenge.re, rg, profile)
        to_us, to_phone = derive_registration_sa(ks, profile, suite, rrq.spi, controller_spi)
        lifetime, grace = self.policy.sa_lifetime_s, self.policy.grace_s
        registration = Registration(rrq.ext, request.peer, secrets.token_hex(16), rrq.spi,
                                    controller_spi, suite, to_us, to_phone,
                                    registration_hmac_key(ks, profile), lifetime, grace, rg)
        token = Token(_timestamp(now), rrq.seq, self.policy.gatekeeper_id, rrq.ext,
                      re=challenge.re, rg=rg)
        reply = encode_message(Rcf(rrq.seq, self.policy.gatekeeper_id, rrq.ext,
                                   registration.session_id, self.policy.esp_address,
                                   controller_spi, suite.pktc, lifetime, grace, token),
                               challenge.auth_key, profile)
        self.lookaside.put(request.lookaside_key, reply, mono)
        return Outcome("rrq", "OK", reply, rrq.ext, registration=registration)

    def _expire(self, mono: float) -> None:
        if len(self.challenges) > 1024 or any(c.expires <= mono for c in
                                              list(self.challenges.values())[:8]):
            self.challenges = {rg: c for rg, c in self.challenges.items() if c.expires > mono}


# --- the phone --------------------------------------------------------------------------------

@dataclass(frozen=True)
class PhoneKey:
    """What a phone keeps across restarts (from its key file): the profile, g, K_g, CV_m."""

    profile: Profile
    generator: bytes
    generator_key: bytes
    check_value: bytes

    def __repr__(self) -> str:  # never show K_g
        return f"PhoneKey({self.profile.value}, g={self.generator.hex()})"


@dataclass(frozen=True)
class PhoneEvent:
    kind: str  # "rrq" (send `reply`), "registered", "rejected", "ignored"
    reply: bytes | None = None
    sa: ClientSa | None = None
    session_id: str | None = None
    esp_address: Address | None = None
    reason: str | None = None  # GRJ: STALE_KEY or NOT_HOMED
    alternates: tuple[Address, ...] = ()
    detail: str = ""


class PhoneRegistration:
    """One registration attempt at a time: `grq` starts one (a new Re, a new sequence
    number), `receive` follows it. Raises MalformedMessage (and IcvMismatch) for what must be
    ignored: a message that does not answer the pending request or does not verify."""

    def __init__(self, *, ext: str, pin: str, key: PhoneKey,
                 suites: tuple[esp.Suite, ...] = (esp.AES_GCM_16, esp.AES_CBC_SHA1,
                                                  esp.DES3_CBC_SHA1),
                 random: Callable[[int], bytes] = os.urandom) -> None:
        self.ext = ext
        self.pin = pin
        self.key = key
        self.suites = suites
        self.random = random
        self.auth_key = auth_key(key.generator_key, pin, key.profile)
        self.seq = int.from_bytes(random(2), "big") % 65535 + 1
        self.re: bytes | None = None
        self.rg: bytes | None = None
        self.gatekeeper_id: str | None = None
        self.spi = 0
        self.rrq: bytes | None = None

    def _next_seq(self) -> int:
        self.seq = self.seq % 65535 + 1
        return self.seq

    def grq(self, now: datetime, ras_address: Address) -> bytes:
        """A new GRQ (new Re): the previous attempt is abandoned."""
        self.re, self.rg, self.rrq = self.random(16), None, None
        seq = self._next_seq()
        token = Token(_timestamp(now), seq, self.ext, generator=self.key.generator,
                      check_value=self.key.check_value, re=self.re)
        return encode_message(Grq(seq, ras_address, self.ext, token), self.auth_key,
                              self.key.profile)

    def receive(self, data: bytes, now: datetime, mono: float) -> PhoneEvent:
        received = decode_message(data)
        message = received.message
        if isinstance(message, Grj):
            if self.re is None or message.re != self.re or message.seq != self.seq:
                raise MalformedMessage("UNSOLICITED_GRJ")
            return PhoneEvent("rejected", reason=message.reason,
                              alternates=message.alternates)
        if isinstance(message, Gcf):
            return self._gcf(received, message, now)
        if isinstance(message, Rcf):
            return self._rcf(received, message, mono)
        return PhoneEvent("ignored", detail=type(message).__name__)

    def _gcf(self, received: Received, gcf: Gcf, now: datetime) -> PhoneEvent:
        if self.re is None or gcf.token.re != self.re or gcf.seq != self.seq:
            raise MalformedMessage("UNSOLICITED_GCF")
        verify_message(received, self.auth_key, self.key.profile)
        if self.rrq is not None and gcf.token.rg == self.rg:
            return PhoneEvent("rrq", self.rrq)  # the GCF again: our RRQ was lost
        self.rg, self.gatekeeper_id = gcf.token.rg, gcf.gatekeeper_id
        self.spi = struct.unpack(">I", self.random(4))[0] % 0xFFFFFF00 + 256
        token = Token(_timestamp(now), gcf.seq, self.ext, gcf.gatekeeper_id, re=self.re,
                      rg=self.rg)
        self.rrq = encode_message(Rrq(gcf.seq, gcf.ras_address, self.ext, gcf.gatekeeper_id,
                                      self.spi, tuple(s.pktc for s in self.suites), token),
                                  self.auth_key, self.key.profile)
        return PhoneEvent("rrq", self.rrq)

    def _rcf(self, received: Received, rcf: Rcf, mono: float) -> PhoneEvent:
        if self.rg is None or rcf.token.re != self.re or rcf.token.rg != self.rg \
                or rcf.seq != self.seq or rcf.ext != self.ext:
            raise MalformedMessage("UNSOLICITED_RCF")
        verify_message(received, self.auth_key, self.key.profile)
        suite = esp.SUITES.get(rcf.suite)
        if suite is None or suite not in self.suites:
            raise MalformedMessage("SUITE_NOT_OFFERED", str(rcf.suite))
        assert self.re is not None
        ks = session_key(self.key.generator_key, self.pin, self.re, self.rg, self.key.profile)
        keys_out, keys_in = derive_registration_sa(ks, self.key.profile, suite, self.spi,
                                                   rcf.spi)
        sa = ClientSa(esp.InboundSa(self.spi, suite, keys_in),
                      esp.OutboundSa(rcf.spi, suite, keys_out, self.random), suite,
                      rcf.lifetime_s, rcf.grace_s, mono,
                      registration_hmac_key(ks, self.key.profile), keys_out, keys_in)
        self.re = self.rg = self.rrq = None  # done: nothing answers this attempt any more
        return PhoneEvent("registered", sa=sa, session_id=rcf.session_id,
                          esp_address=rcf.esp_address)
