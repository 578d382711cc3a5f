"""The KDC side of the AS exchange with PKINIT (RFC 4120 §3.1, RFC 4556 §3.2, RFC 5349,
RFC 8636). No I/O: bytes in, bytes out or a KerberosError, with time and randomness passed in.

Steps, in the order errors are reported (table in docs/protocol.md §5): decode; realm and
principals; PKINIT padata present (else PREAUTH_REQUIRED advertising PA-PK-AS-REQ and a
freshness token); the signer's certificate chains to an operator or manufacturer anchor
(70/71) and binds to the requested client by common/pki/device_policy.py's rules (75, 77, 18,
72); the signature verifies (64); the PKAuthenticator's ctime is within the skew (37, with
stime), its nonce is the request's, its paChecksum (and paChecksum2) hash the received
KDC-REQ-BODY (79 when missing, 41 when wrong); the freshness token (24/90); no replay (34); the
DH group is one we accept (65 with TD-DH-PARAMETERS). Then the KDC's DH half is signed into
the reply and the reply key derived (RFC 8636 KDF when offered, else octetstring2key), or the
reply key is sent by RSA key transport, and the ticket issued.
"""

import functools
import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from cryptography import x509

from common.codes import (
    ErrorCode,
    KdcOptions,
    KeyUsage,
    MessageType,
    NameType,
    PaDataType,
    TicketFlags,
    TypedDataType,
)
from common.crypto.cms import (
    DIGESTS,
    Signer,
    certificates_in,
    chain_thumbprint,
    choose_content_cipher,
    envelope,
    sign_signed_data,
    signer_certificate,
    verify_signed_data,
)
from common.crypto.dh import (
    SMALLEST_DH_BITS,
    DhKeyPair,
    ModpGroup,
    generate_dh,
    generate_ecdh,
    identify_group,
    known_groups,
)
from common.crypto.hmac_states import hmac_digest
from common.crypto.keys import Key
from common.crypto.pkinit_kdf import KDF_HASHES, octetstring2key, pkinit_kdf
from common.errors import ClockSkew, KerberosError, MalformedMessage, ModifiedError
from common.kerberos.replay import ReplayCache
from common.kerberos.tickets import (
    PrincipalEntry,
    PrincipalUnknown,
    ServerUnknown,
    build_kdc_rep,
    choose_enctype,
    issue_ticket,
)
from common.messages.cms import AlgorithmIdentifier, SignedData, decode_signed_data
from common.messages.kdc_rep import encode_as_rep
from common.messages.kdc_req import KdcReq, KdcReqBody, decode_as_req, received_req_body
from common.messages.krb_error import encode_method_data, encode_typed_data
from common.messages.padata import (
    EtypeInfo2Entry,
    decode_pa_enc_timestamp,
    decode_pa_enc_ts_enc,
    encode_etype_info2,
)
from common.messages.pkinit import (
    DH_PUBLIC_NUMBER,
    ID_EC_PUBLIC_KEY,
    ID_PKINIT_AUTH_DATA,
    ID_PKINIT_DHKEY_DATA,
    ID_PKINIT_RKEY_DATA,
    AuthPack,
    DhRepInfo,
    DomainParameters,
    KdcDhKeyInfo,
    KdfAlgorithmId,
    Krb5PrincipalName,
    PaPkAsRep,
    ReplyKeyPack,
    decode_auth_pack,
    decode_dh_public_value,
    decode_domain_parameters,
    decode_named_curve,
    decode_pa_pk_as_req,
    encode_dh_public_value,
    encode_domain_parameters,
    encode_kdc_dh_key_info,
    encode_other_info,
    encode_pa_pk_as_rep,
    encode_reply_key_pack,
    encode_td_dh_parameters,
)
from common.messages.types import (
    AuthorizationDataEntry,
    Checksum,
    EncryptionKey,
    PaData,
    PrincipalName,
    TypedDataEntry,
    find_padata,
)
from common.pki.device_policy import (
    Binding,
    ClientNameMismatch,
    CustomerStore,
    DevicePolicy,
    certificate_binding,
    check_customer,
    verify_device_chain,
)

DEVICE_PREFIX = "cta"  # device principals: cta/<12 hex digits of the MAC>
CONTROLLER_PREFIX = "sigctl/"  # signaling controllers' service principals

# The KDFs telekey offers, in its order of preference when the client lists several.
KDF_PREFERENCE = ("1.3.6.1.5.2.3.6.2", "1.3.6.1.5.2.3.6.4", "1.3.6.1.5.2.3.6.3",
                  "1.3.6.1.5.2.3.6.1")


class PreauthRequired(KerberosError):
    code = ErrorCode.KDC_ERR_PREAUTH_REQUIRED


class PreauthFailed(KerberosError):
    code = ErrorCode.KDC_ERR_PREAUTH_FAILED


class WrongRealm(KerberosError):
    code = ErrorCode.KDC_ERR_WRONG_REALM


class DhParametersNotAccepted(KerberosError):
    code = ErrorCode.KDC_ERR_DH_KEY_PARAMETERS_NOT_ACCEPTED


class PaChecksumMissing(KerberosError):
    code = ErrorCode.KDC_ERR_PA_CHECKSUM_MUST_BE_INCLUDED


class PreauthExpired(KerberosError):
    code = ErrorCode.KDC_ERR_PREAUTH_EXPIRED


class PrincipalStore(Protocol):
    """Looks principals up by name without realm ('krbtgt/EXAMPLE.TEST', 'phone1')."""

    def get_principal(self, name: str) -> PrincipalEntry | None: ...


@dataclass(frozen=True, slots=True)
class AsPolicy:
    """What the AS exchange needs to know about the realm (built from the KDC's settings)."""

    realm: str
    anchors: tuple[x509.Certificate, ...]
    kdc_signer: Signer
    max_skew: timedelta = timedelta(minutes=5)
    min_dh_bits: int = 2048
    enctypes: tuple[int, ...] = (20, 18, 19, 17)
    default_lifetime: timedelta = timedelta(hours=10)
    # Tickets for signaling controllers (sigctl/...) last days (seed 000/001), unless the
    # principal has its own cap; the client's `till` still applies.
    controller_lifetime: timedelta = timedelta(days=7)
    require_client_eku: bool = True
    dh_key_reuse: timedelta = timedelta(0)  # RFC 4556 §3.2.3.1; 0 = a fresh key every time
    manufacturer_anchors: tuple[x509.Certificate, ...] = ()
    crls: tuple[x509.CertificateRevocationList, ...] = ()
    unprovisioned_numbers: tuple[str, ...] = ()
    require_freshness: bool = False  # RFC 8070: refuse PKINIT requests without a token
    # How the KDC makes a fresh DH key (a parameter so that tests can hand it a chosen one).
    dh_keygen: Callable[[ModpGroup], DhKeyPair] = generate_dh

    @property
    def devices(self) -> DevicePolicy:
        return DevicePolicy(self.realm, self.anchors, self.manufacturer_anchors, self.crls,
                            self.unprovisioned_numbers, self.require_client_eku)


@dataclass(frozen=True, slots=True)
class VerifiedChain:
    """A client's certificate chain, verified (PkinitState.verified_chains): the signer's
    certificate, the kind of anchor it chains to, the chain, the earliest notAfter in it, and
    the principal it binds to under `policy` (CRLs and names; bound again if the policy is
    another)."""

    not_after: datetime
    certificate: x509.Certificate
    kind: str
    chain: list[x509.Certificate]
    policy: AsPolicy
    binding: Binding


class PkinitState:
    """What the AS exchange may keep between requests, owned by the daemon (no I/O):
    a bounded cache of certificate chains already verified (keyed by chain_thumbprint: the
    signer's identifier and the certificates as received, valid until the earliest notAfter
    in the chain), and the KDC's DH key pairs while `AsPolicy.dh_key_reuse` allows reusing
    them."""

    def __init__(self, max_thumbprints: int = 10_000) -> None:
        self.max_thumbprints = max_thumbprints
        self.verified_chains: dict[bytes, VerifiedChain] = {}
        self.dh_keys: dict[tuple[str, int | str], tuple[datetime, object]] = {}

    def invalidate(self) -> None:
        """Forget verified chains (e.g. after the anchors change). Customer records need no
        invalidation: they are consulted on every request."""
        self.verified_chains.clear()


def principal_text(name: PrincipalName) -> str:
    return "/".join(name.name_string)


def handle_as_req(data: bytes, *, policy: AsPolicy, principals: PrincipalStore, now: datetime,
                  replay: ReplayCache | None = None, state: PkinitState | None = None,
                  customers: CustomerStore | None = None,
                  random: Callable[[int], bytes] = os.urandom,
                  notes: dict[str, str] | None = None, mono: float | None = None) -> bytes:
    """Process one AS-REQ; return the DER AS-REP or raise a KerberosError for the edge.
    `notes`, when given, receives `client`, `server` and the pre-authentication `method`
    (for the edge's log line).

    `replay` remembers verified signed requests for the skew window: the same signed AuthPack
    presented twice is refused with KRB_AP_ERR_REPEAT (34). `mono`, monotonic seconds, keeps
    them remembered across a step of the wall clock (common/kerberos/replay.py).
    """
    req = decode_as_req(data)
    body = req.req_body
    if body.realm != policy.realm:
        raise WrongRealm("WRONG_REALM", body.realm)
    if body.cname is None or body.sname is None:
        raise MalformedMessage("MISSING_NAME", "AS-REQ without cname or sname")
    if notes is not None:
        notes["client"] = principal_text(body.cname)
        notes["server"] = principal_text(body.sname)
    client = principals.get_principal(principal_text(body.cname))
    if client is None and body.cname.name_string[:1] == (DEVICE_PREFIX,):
        # Devices need no database entry: their certificate is the credential.
        client = PrincipalEntry(principal_text(body.cname))
    if client is None:
        raise PrincipalUnknown("CLIENT_NOT_FOUND", principal_text(body.cname))
    server = principals.get_principal(principal_text(body.sname))
    if server is None:
        raise ServerUnknown("SERVER_NOT_FOUND", principal_text(body.sname))
    pa = find_padata(req.padata, PaDataType.PA_PK_AS_REQ)
    enc_timestamp = find_padata(req.padata, PaDataType.PA_ENC_TIMESTAMP)
    freshness_key = _freshness_key(principals, policy.realm)
    reply_enctype = choose_enctype(req.req_body.etype, policy.enctypes)
    if notes is not None:
        notes["method"] = ("PKINIT" if pa is not None else "ENC-TIMESTAMP"
                           if enc_timestamp is not None and client.keys else "NONE")
    if pa is not None:
        pk_as_rep, reply_key, authorization_data = _pkinit(
            pa, req, data, reply_enctype, policy, now, replay, state, customers, freshness_key,
            random, notes, mono)
        reply_padata: tuple[PaData, ...] = (PaData(PaDataType.PA_PK_AS_REP, pk_as_rep),)
    elif enc_timestamp is not None and client.keys:
        reply_key = _verify_enc_timestamp(enc_timestamp.padata_value, client, policy, now,
                                          replay, mono)
        reply_padata, authorization_data = (), ()
    else:
        token = make_freshness_token(freshness_key, now)
        if not client.keys:  # a device: PKINIT only
            raise PreauthRequired("PREAUTH_REQUIRED", e_data=_pkinit_methods(token))
        methods = (PaData(PaDataType.PA_PK_AS_REQ, b""),
                   PaData(PaDataType.PA_AS_FRESHNESS, token),
                   PaData(PaDataType.PA_ENC_TIMESTAMP, b""),
                   PaData(PaDataType.PA_ETYPE_INFO2, _etype_info2(client, body, policy)))
        raise PreauthRequired("PREAUTH_REQUIRED", e_data=encode_method_data(methods))

    server_key = server.key_for(policy.enctypes)
    if server_key is None:
        raise ServerUnknown("SERVER_HAS_NO_KEY", server.name)
    lifetime = server.max_life or (policy.controller_lifetime
                                   if server.name.startswith(CONTROLLER_PREFIX)
                                   else policy.default_lifetime)
    endtime = now + lifetime
    if body.till.year > 1970 and body.till < endtime:
        endtime = body.till
    flags = TicketFlags.INITIAL | TicketFlags.PRE_AUTHENT
    if body.kdc_options & KdcOptions.FORWARDABLE:
        flags |= TicketFlags.FORWARDABLE
    session_enctype = choose_enctype(
        body.etype, tuple(e for e in policy.enctypes if server.key_for((e,)) is not None)
        or policy.enctypes)
    issued = issue_ticket(
        realm=policy.realm, cname=body.cname, crealm=policy.realm, sname=body.sname,
        server_key=server_key, session_enctype=session_enctype, flags=flags,
        authtime=now.replace(microsecond=0), endtime=endtime.replace(microsecond=0),
        authorization_data=(authorization_data + client.authorization_data) or None,
        random=random)
    rep = build_kdc_rep(msg_type=MessageType.KRB_AS_REP, issued=issued, nonce=body.nonce,
                        reply_key=reply_key, reply_usage=KeyUsage.AS_REP_ENCPART,
                        padata=reply_padata or None, now=now)
    return encode_as_rep(rep)


def _pkinit(pa: PaData, req: KdcReq, data: bytes, reply_enctype: int, policy: AsPolicy,
            now: datetime, replay: ReplayCache | None, state: PkinitState | None,
            customers: CustomerStore | None, freshness_key: bytes,
            random: Callable[[int], bytes], notes: dict[str, str] | None = None,
            mono: float | None = None
            ) -> tuple[bytes, Key, tuple[AuthorizationDataEntry, ...]]:
    """PKINIT (RFC 4556 §3.2.2): (DER PA-PK-AS-REP, reply key, the certificate's
    authorization data)."""
    body = req.req_body
    assert body.cname is not None  # checked by the caller
    signed = decode_signed_data(decode_pa_pk_as_req(pa.padata_value).signed_auth_pack)
    if signed.encap_content_info.e_content_type != ID_PKINIT_AUTH_DATA:
        raise MalformedMessage("BAD_CONTENT_TYPE", signed.encap_content_info.e_content_type)
    cert, binding = _bind_client_certificate(signed, body.cname, policy, now, state, customers)
    auth_pack = decode_auth_pack(verify_signed_data(signed, cert))
    _verify_pk_authenticator(auth_pack, req, data, policy, now)
    _verify_freshness(auth_pack.pk_authenticator.freshness_token, freshness_key, policy, now)
    if replay is not None:
        replay.check_and_add(hashlib.sha256(signed.signer_infos[0].signature).digest(), now,
                             mono)
    if auth_pack.client_public_value is None:
        pk_as_rep, reply_key = _rsa_reply(auth_pack, cert, data, reply_enctype, policy, random)
    else:
        pk_as_rep, reply_key = _dh_reply(auth_pack, req, data, reply_enctype, policy, random,
                                         state, now, notes)
    return pk_as_rep, reply_key, binding.authorization_data


def _verify_enc_timestamp(value: bytes, client: PrincipalEntry, policy: AsPolicy,
                          now: datetime, replay: ReplayCache | None,
                          mono: float | None = None) -> Key:
    """Encrypted-timestamp pre-authentication (RFC 4120 §5.2.7.2) for principals with keys
    (signaling controllers logging in with their keytab, as MIT `kinit -k` does): the
    PA-ENC-TS-ENC decrypts with the client's key of that enctype (usage 1) and its time is
    within the skew. The reply is encrypted in that same long-term key."""
    encrypted = decode_pa_enc_timestamp(value)
    entry = client.key_for((encrypted.etype,))
    if entry is None:
        raise PreauthFailed("NO_CLIENT_KEY_FOR_ETYPE", str(encrypted.etype))
    try:
        plain = entry.key.decrypt(KeyUsage.AS_REQ_PA_ENC_TIMESTAMP, encrypted.cipher)
    except KerberosError as exc:
        raise PreauthFailed("BAD_ENC_TIMESTAMP", exc.status) from exc
    stamp = decode_pa_enc_ts_enc(plain)
    when = stamp.patimestamp + timedelta(microseconds=stamp.pausec or 0)
    if abs(when - now) > policy.max_skew:
        raise ClockSkew("ENC_TIMESTAMP_SKEW", when.isoformat())
    if replay is not None:
        replay.check_and_add(hashlib.sha256(encrypted.cipher).digest(), now, mono)
    return entry.key


def _etype_info2(client: PrincipalEntry, body: KdcReqBody, policy: AsPolicy) -> bytes:
    """PA-ETYPE-INFO2 for the client's keys, in the client's order of preference; the salt is
    the default one (realm then name components), which is what random keys are listed with."""
    salt = policy.realm + "".join(client.name.split("/"))
    entries = tuple(EtypeInfo2Entry(e, salt, None) for e in body.etype
                    if client.key_for((e,)) is not None)
    return encode_etype_info2(entries)


def _bind_client_certificate(signed: SignedData, cname: PrincipalName, policy: AsPolicy,
                             now: datetime, state: PkinitState | None,
                             customers: CustomerStore | None
                             ) -> tuple[x509.Certificate, Binding]:
    """The signer's certificate and the principal it binds to (common/pki/device_policy.py).
    Verified chains are cached by thumbprint until their earliest notAfter, with what they
    bind to; customer records are consulted on every request."""
    thumbprint = chain_thumbprint(signed)
    verified = state.verified_chains.get(thumbprint) if state else None
    if verified is None or now > verified.not_after:
        cert = signer_certificate(signed)
        devices = policy.devices
        kind, chain = verify_device_chain(cert, certificates_in(signed), devices, now)
        verified = VerifiedChain(min(c.not_valid_after_utc for c in chain), cert, kind, chain,
                                 policy, certificate_binding(cert, kind, chain, devices))
        if state is not None:
            if len(state.verified_chains) >= state.max_thumbprints:
                state.verified_chains.clear()
            state.verified_chains[thumbprint] = verified
    elif state is not None and verified.policy is not policy:  # bind it again under this one
        verified = state.verified_chains[thumbprint] = replace(
            verified, policy=policy, binding=certificate_binding(
                verified.certificate, verified.kind, verified.chain, policy.devices))
    binding = verified.binding
    check_customer(binding, customers)
    if binding.principal != principal_text(cname):
        raise ClientNameMismatch("CLIENT_NAME_MISMATCH",
                                 f"certificate is for {binding.principal}")
    return verified.certificate, binding


def _verify_pk_authenticator(auth_pack: AuthPack, req: KdcReq, data: bytes,
                             policy: AsPolicy, now: datetime) -> None:
    pk = auth_pack.pk_authenticator
    if abs(pk.ctime - now) > policy.max_skew:
        raise ClockSkew("CTIME_SKEW", f"ctime {pk.ctime.isoformat()}")
    # The PKAuthenticator's nonce "does not need to match with the nonce in the KDC-REQ-BODY"
    # (RFC 4556 §3.2.1): it is bound by the signature, and KDCDHKeyInfo echoes it.
    if pk.pa_checksum is None:
        raise PaChecksumMissing("PA_CHECKSUM_MISSING")
    body = received_req_body(data)
    if not hmac.compare_digest(pk.pa_checksum, hashlib.sha1(body).digest()):
        raise ModifiedError("PA_CHECKSUM_MISMATCH")
    if pk.pa_checksum2 is not None:
        # MS-PKCA paChecksum2: the same body under a named SHA-1/SHA-2 hash.
        digest = DIGESTS.get(pk.pa_checksum2.algorithm_identifier.algorithm)
        if digest is None:
            raise ModifiedError("PA_CHECKSUM2_ALGORITHM",
                                pk.pa_checksum2.algorithm_identifier.algorithm)
        if not hmac.compare_digest(pk.pa_checksum2.checksum, hashlib.new(digest, body).digest()):
            raise ModifiedError("PA_CHECKSUM2_MISMATCH")


# --- RFC 8070 freshness tokens ---------------------------------------------------------------
# Token = issue time (8 bytes, big-endian seconds) | HMAC-SHA256(K, "telekey-freshness-v1" |
# time)[:16], with K = PRF of the realm's newest krbtgt key (RFC 3961 §3): every KDC sharing
# the database issues and accepts the same tokens. A token is good for 2 x max_skew.

_FRESHNESS_LABEL = b"telekey-freshness-v1"


def _freshness_key(principals: PrincipalStore, realm: str) -> bytes:
    krbtgt = principals.get_principal(f"krbtgt/{realm}")
    if krbtgt is None or not krbtgt.keys:
        raise ServerUnknown("NO_KRBTGT", realm)
    newest = max(krbtgt.keys, key=lambda k: (k.kvno, k.key.enctype))
    return newest.key.prf(_FRESHNESS_LABEL, keep=True)  # kept on the krbtgt key


def make_freshness_token(key: bytes, now: datetime) -> bytes:
    stamp = int(now.timestamp()).to_bytes(8, "big")
    return stamp + _freshness_mac(key, stamp)


@functools.lru_cache(maxsize=8)
def _pkinit_methods(freshness_token: bytes) -> bytes:
    """METHOD-DATA offering PKINIT with this freshness token, the same for every device in
    the same second."""
    return encode_method_data((PaData(PaDataType.PA_PK_AS_REQ, b""),
                               PaData(PaDataType.PA_AS_FRESHNESS, freshness_token)))


@functools.lru_cache(maxsize=8)
def _freshness_mac(key: bytes, stamp: bytes) -> bytes:
    """A token's MAC (HMAC-SHA256 over label and the second it was issued, truncated to
    16 bytes), remembered for the last few (key, second) pairs: every PREAUTH_REQUIRED in the
    same second carries the same token, and the client presents it back within seconds."""
    return hmac_digest(key, _FRESHNESS_LABEL + stamp, "sha256")[:16]


def _verify_freshness(token: bytes | None, key: bytes, policy: AsPolicy, now: datetime) -> None:
    """A token we did not issue (another KDC's, or forged) counts as no token; then
    `require_freshness` decides (24). One of ours that is too old is 90 PREAUTH_EXPIRED."""
    ours = token is not None and len(token) == 24 and hmac.compare_digest(
        token[8:], _freshness_mac(key, token[:8]))
    if not ours:
        if policy.require_freshness:
            raise PreauthFailed("FRESHNESS_TOKEN_REQUIRED")
        return
    assert token is not None
    issued = int.from_bytes(token[:8], "big")
    if abs(now.timestamp() - issued) > 2 * policy.max_skew.total_seconds():
        raise PreauthExpired("FRESHNESS_TOKEN_EXPIRED")


def _usable_dh_bits(policy: AsPolicy) -> int:
    """The smallest MODP group the KDC uses: the policy's, but never below what the crypto
    library can generate keys in (a min_dh_bits of 1024 still refuses group 2, with error 65
    and the groups that work, rather than failing inside the library)."""
    return max(policy.min_dh_bits, SMALLEST_DH_BITS)


def _accepted_dh_parameters(policy: AsPolicy) -> bytes:
    """TD-DH-PARAMETERS listing the groups we accept, smallest first (RFC 4556 §3.2.2)."""
    groups = [g for g in known_groups() if _usable_dh_bits(policy) <= g.bits <= 4096]
    params = tuple(AlgorithmIdentifier(DH_PUBLIC_NUMBER, encode_domain_parameters(
        DomainParameters(g.p, g.g, g.q, None, None))) for g in groups)
    return encode_typed_data((TypedDataEntry(TypedDataType.TD_DH_PARAMETERS,
                                             encode_td_dh_parameters(params)),))


def _reused(state: PkinitState | None, policy: AsPolicy, kind: tuple[str, int | str],
            now: datetime, make: Callable[[], Any]) -> tuple[Any, datetime | None]:
    """The KDC's DH key for `kind`, reused while policy allows (returns its expiration)."""
    if state is None or not policy.dh_key_reuse:
        return make(), None
    cached = state.dh_keys.get(kind)
    if cached is None or cached[0] <= now:
        cached = (now.replace(microsecond=0) + policy.dh_key_reuse, make())
        state.dh_keys[kind] = cached
    return cached[1], cached[0]


def _dh_reply(auth_pack: AuthPack, req: KdcReq, data: bytes, enctype: int, policy: AsPolicy,
              random: Callable[[int], bytes], state: PkinitState | None,
              now: datetime, notes: dict[str, str] | None = None) -> tuple[bytes, Key]:
    """(DER PA-PK-AS-REP, reply key) for the DH/ECDH key-delivery method."""
    expiration = None
    spki = auth_pack.client_public_value
    assert spki is not None  # the caller sends clients without one to _rsa_reply
    if spki.algorithm.algorithm == DH_PUBLIC_NUMBER and spki.algorithm.parameters:
        params = decode_domain_parameters(spki.algorithm.parameters)
        group = identify_group(params.p, params.g)
        if group is None or group.bits < _usable_dh_bits(policy):
            raise DhParametersNotAccepted("DH_GROUP_NOT_ACCEPTED",
                                          f"{params.p.bit_length()} bits",
                                          e_data=_accepted_dh_parameters(policy))
        try:
            peer = decode_dh_public_value(spki.subject_public_key)
            ours, expiration = _reused(state, policy, ("dh", group.number), now,
                                       lambda: policy.dh_keygen(group))
            secret = ours.shared_secret(peer)
            # Heimdal hashes a shared secret that starts with a zero byte without that byte
            # (about one login in 256 fails, against any KDC). A fresh key costs 0.3 ms, so a
            # KDC that does not reuse its key picks another until the secret has no leading
            # zero; a reused key cannot be changed for one client.
            retries = 0
            while secret[0] == 0 and expiration is None and retries < 64:
                ours = policy.dh_keygen(group)
                secret = ours.shared_secret(peer)
                retries += 1
            if retries and notes is not None:
                notes["dh_retries"] = str(retries)
        except ValueError as exc:
            raise PreauthFailed("BAD_DH_PUBLIC_VALUE", str(exc)) from exc
        our_public = encode_dh_public_value(ours.public_value)
    elif spki.algorithm.algorithm == ID_EC_PUBLIC_KEY and spki.algorithm.parameters:
        try:
            curve = decode_named_curve(spki.algorithm.parameters)
            ec_ours, expiration = _reused(state, policy, ("ec", curve), now,
                                          lambda: generate_ecdh(curve))
            secret = ec_ours.shared_secret(spki.subject_public_key)
        except ValueError as exc:
            raise DhParametersNotAccepted("EC_CURVE_NOT_ACCEPTED", str(exc),
                                          e_data=_accepted_dh_parameters(policy)) from exc
        our_public = ec_ours.public_point
    else:
        raise DhParametersNotAccepted("KEY_AGREEMENT_NOT_ACCEPTED", spki.algorithm.algorithm,
                                      e_data=_accepted_dh_parameters(policy))

    server_nonce = random(32) if auth_pack.client_dh_nonce is not None else None
    if server_nonce is not None and expiration is None:
        # RFC 4556 §3.2.3.1: with serverDHNonce the KDC includes dhKeyExpiration, and Heimdal
        # and Windows refuse a reply without it. A fresh key is never used again: it expires
        # now, stated with the allowed clock skew so that no client finds it already past.
        expiration = now.replace(microsecond=0) + policy.max_skew
    key_info = KdcDhKeyInfo(our_public, auth_pack.pk_authenticator.nonce, expiration)
    signed = sign_signed_data(ID_PKINIT_DHKEY_DATA, encode_kdc_dh_key_info(key_info),
                              policy.kdc_signer)
    offered = [k.kdf_id for k in auth_pack.supported_kdfs or ()]
    kdf = next((oid for oid in KDF_PREFERENCE if oid in offered and oid in KDF_HASHES), None)
    pk_as_rep = encode_pa_pk_as_rep(PaPkAsRep(
        DhRepInfo(signed, server_nonce, KdfAlgorithmId(kdf) if kdf else None), None))
    if kdf is not None:
        body = req.req_body
        assert body.cname is not None and body.sname is not None  # checked by the caller
        other_info = encode_other_info(
            kdf, Krb5PrincipalName(body.realm, body.cname),
            Krb5PrincipalName(body.realm, body.sname), enctype, data, pk_as_rep)
        return pk_as_rep, pkinit_kdf(kdf, secret, other_info, enctype)
    if auth_pack.client_dh_nonce is not None and server_nonce is not None:
        secret += auth_pack.client_dh_nonce + server_nonce
    return pk_as_rep, octetstring2key(secret, enctype)


def _rsa_reply(auth_pack: AuthPack, cert: x509.Certificate, data: bytes, enctype: int,
               policy: AsPolicy, random: Callable[[int], bytes]) -> tuple[bytes, Key]:
    """(DER PA-PK-AS-REP, reply key) for RSA key transport (RFC 4556 §3.2.3.2): a random reply
    key with asChecksum over the whole received AS-REQ (key usage 6), in a SignedData
    ReplyKeyPack, enveloped to the client's certificate."""
    reply_key = Key.random(enctype, random)
    checksum = Checksum(reply_key.profile.cksumtype,
                        reply_key.checksum(KeyUsage.TGS_REQ_AUTH_CKSUM, data))
    pack = encode_reply_key_pack(ReplyKeyPack(EncryptionKey(reply_key.enctype, reply_key.data),
                                              checksum))
    signed = sign_signed_data(ID_PKINIT_RKEY_DATA, pack, policy.kdc_signer, content_info=False)
    cipher = choose_content_cipher([a.algorithm for a in auth_pack.supported_cms_types or ()])
    enc_key_pack = envelope(signed, cert, cipher, random)
    return encode_pa_pk_as_rep(PaPkAsRep(None, enc_key_pack)), reply_key


def krbtgt_name(realm: str) -> PrincipalName:
    return PrincipalName(NameType.NT_SRV_INST, ("krbtgt", realm))
