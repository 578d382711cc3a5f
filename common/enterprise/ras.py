"""Seed 002's registration messages as H.225.0 RAS (GRQ, GCF, GRJ, RRQ, RCF; module
H323-MESSAGES, aligned PER through common/enterprise/per.py) carrying H.235 tokens in the
H.235.1 baseline layout ("procedure I", authentication and integrity of all fields), so that
Wireshark's h225 dissector shows every field. No I/O.

Every message but GRJ carries one CryptoH323Token:

    nestedcryptoToken: cryptoHashedToken {
      tokenOID   0.0.8.235.0.2.1            (H.235.1 "A": all fields of the RAS message)
      hashedVals ClearToken {
        tokenOID    0.0.8.235.0.2.5         (H.235.1 "T")
        timeStamp   the sender's clock, seconds since 1970
        random      the message's requestSeqNum
        generalID   the receiver (gatekeeper identifier; absent in GRQ)
        sendersID   the sender (the extension, or the gatekeeper identifier)
        profileInfo seed 002's values, by elementID: 1 g (16 octets), 2 CV_m (3), 3 Re (16),
                    4 Rg (16)
      }
      token HASHED { algorithmOID, paramS {}, hash }
    }

The hash is the ICV of seed 002 (common/enterprise/keys.py: HMAC under K_a, 96 bits in the
seed profile with H.235.1's algorithm "U" 0.0.8.235.0.2.6 = HMAC-SHA1-96, 128 bits of
HMAC-SHA256 in the default profile with hmacWithSHA256 1.2.840.113549.2.9), computed as
H.235.1 says over the whole encoded RasMessage with the hash field set to zero bits of its
length; the receiver decodes, zeroes it, encodes again (decode_ras guarantees the same bytes)
and checks.

What RAS has no field for travels in `genericData`, identified by telekey's GUID (a
GloballyUniqueID, `nonStandard`) and covered by the ICV like every other field: in RRQ the
phone's inbound ESP SPI (parameter 1, number32) and its ESP suites in order of preference
(2, raw: two octets each, the pktc suite bytes of docs/protocol.md §7); in RCF the
controller's inbound SPI (1), the suite chosen (2, two octets), the SA lifetime (3, number32,
seconds) and the grace period (4). The session ID of seed 002 is RCF's endpointIdentifier;
RCF's callSignalAddress is where the controller takes ESP.

GRJ is the only unauthenticated message: rejectReason `securityDenial` with genericData reason
(parameter 5, text) `stale-key-information` (CV_m not current, or g unknown: the phone fetches
a key file), or `terminalExcluded` with `altGKInfo` (an extension homed elsewhere: the
alternates); its `tokens` echo the phone's Re in a ClearToken (profile element 3).
"""

import hmac
from dataclasses import dataclass, replace
from typing import Any, Final

from common.enterprise.keys import NONCE_BYTES, SIZES, IcvMismatch, Profile, compute_icv
from common.enterprise.per import decode_ras, encode_ras
from common.errors import MalformedMessage

PROTOCOL_ID: Final = "0.0.8.2250.0.7"  # H.225.0 version 7
OID_ALL_FIELDS: Final = "0.0.8.235.0.2.1"  # H.235.1 "A"
OID_CLEAR_TOKEN: Final = "0.0.8.235.0.2.5"  # H.235.1 "T"
OID_HMAC_SHA1_96: Final = "0.0.8.235.0.2.6"  # H.235.1 "U"
OID_HMAC_SHA256: Final = "1.2.840.113549.2.9"  # hmacWithSHA256 (RFC 8018 App. B.1.2)
ICV_OID: Final = {Profile.SEED: OID_HMAC_SHA1_96, Profile.DEFAULT: OID_HMAC_SHA256}
# telekey's GloballyUniqueID for genericData (UUID 6f1c3a52-9d2e-4b8e-a5f7-0c3d2e1b7a64).
TELEKEY_GUID: Final = bytes.fromhex("6f1c3a529d2e4b8ea5f70c3d2e1b7a64")
ELEMENT_G, ELEMENT_CVM, ELEMENT_RE, ELEMENT_RG = 1, 2, 3, 4
PARAM_SPI, PARAM_SUITES, PARAM_LIFETIME, PARAM_GRACE, PARAM_REASON = 1, 2, 3, 4, 5
STALE_KEY: Final = "stale-key-information"
NOT_HOMED: Final = "not-homed-here"
# H.221 vendor of endpointVendor: T.35 country code 0xB5 (USA) with manufacturer code 0,
# which H.225.0 leaves to private use; a phone is a terminal, never a gatekeeper.
VENDOR: Final = {"vendor": {"t35CountryCode": 0xB5, "t35Extension": 0, "manufacturerCode": 0}}
TERMINAL: Final = {"terminal": {}, "mc": False, "undefinedNode": False}

Address = tuple[str, int]


class MissingToken(MalformedMessage):
    """A RAS message whose security token is absent or incomplete: refused, never processed
    as unauthenticated (../shared/asn1/h225/README.md, the silent-drop pitfall)."""


@dataclass(frozen=True, slots=True)
class Token:
    """The hashedVals of the H.235.1 token and its hash (ICV)."""

    timestamp: int
    sequence: int
    senders_id: str
    general_id: str | None = None
    generator: bytes | None = None
    check_value: bytes | None = None
    re: bytes | None = None
    rg: bytes | None = None
    algorithm: str = OID_HMAC_SHA256
    icv: bytes = b""


@dataclass(frozen=True, slots=True)
class Grq:
    """GRQ(g, Re, EXT, CV_m, ICV): EXT is the endpointAlias, the rest in the token."""

    seq: int
    ras_address: Address
    ext: str
    token: Token


@dataclass(frozen=True, slots=True)
class Gcf:
    """GCF(Rg, Re, ICV)."""

    seq: int
    gatekeeper_id: str
    ras_address: Address
    token: Token


@dataclass(frozen=True, slots=True)
class Grj:
    """GRJ: a reason, the alternates and the echoed Re, unauthenticated."""

    seq: int
    gatekeeper_id: str
    reason: str  # STALE_KEY or NOT_HOMED
    alternates: tuple[Address, ...] = ()
    re: bytes | None = None


@dataclass(frozen=True, slots=True)
class Rrq:
    """RRQ(Rg, Re, ICV), with the phone's SPI and suites."""

    seq: int
    ras_address: Address
    ext: str
    gatekeeper_id: str
    spi: int
    suites: tuple[tuple[int, int], ...]
    token: Token


@dataclass(frozen=True, slots=True)
class Rcf:
    """RCF(session ID, Re, Rg, ICV), with the controller's SPI, the suite and the SA's
    lifetime."""

    seq: int
    gatekeeper_id: str
    ext: str
    session_id: str
    esp_address: Address
    spi: int
    suite: tuple[int, int]
    lifetime_s: int
    grace_s: int
    token: Token


Message = Grq | Gcf | Grj | Rrq | Rcf
_NAMES: Final = {Grq: "gatekeeperRequest", Gcf: "gatekeeperConfirm", Grj: "gatekeeperReject",
                 Rrq: "registrationRequest", Rcf: "registrationConfirm"}


@dataclass(frozen=True, slots=True)
class Received:
    """A decoded message, and for the four authenticated ones what their ICV covers (the
    encoding with the hash zeroed)."""

    message: Message
    icv_input: bytes | None


# --- to asn1tools values ----------------------------------------------------------------------

def _transport(address: Address) -> tuple[str, dict[str, Any]]:
    host, port = address
    try:
        ip = bytes(int(part) for part in host.split("."))
    except ValueError:
        raise ValueError(f"{host}: an IPv4 address") from None
    if len(ip) != 4:
        raise ValueError(f"{host}: an IPv4 address")
    return ("ipAddress", {"ip": ip, "port": port})


def _octets(element_id: int, value: bytes) -> dict[str, Any]:
    return {"elementID": element_id, "element": ("octets", value)}


def _clear_token(token: Token) -> dict[str, Any]:
    clear: dict[str, Any] = {"tokenOID": OID_CLEAR_TOKEN, "timeStamp": token.timestamp,
                             "random": token.sequence, "sendersID": token.senders_id}
    if token.general_id is not None:
        clear["generalID"] = token.general_id
    elements = [_octets(element_id, value) for element_id, value in (
        (ELEMENT_G, token.generator), (ELEMENT_CVM, token.check_value), (ELEMENT_RE, token.re),
        (ELEMENT_RG, token.rg)) if value is not None]
    if elements:
        clear["profileInfo"] = elements
    return clear


def _crypto_tokens(token: Token, icv: bytes) -> list[Any]:
    return [("nestedcryptoToken", ("cryptoHashedToken", {
        "tokenOID": OID_ALL_FIELDS, "hashedVals": _clear_token(token),
        "token": {"algorithmOID": token.algorithm, "paramS": {},
                  "hash": (icv, 8 * len(icv))}}))]


def _generic(parameters: list[tuple[int, tuple[str, Any]]]) -> list[dict[str, Any]]:
    return [{"id": ("nonStandard", TELEKEY_GUID),
             "parameters": [{"id": ("standard", pid), "content": content}
                            for pid, content in parameters]}]


def _value(message: Message, icv: bytes) -> tuple[str, dict[str, Any]]:
    base: dict[str, Any] = {"requestSeqNum": message.seq, "protocolIdentifier": PROTOCOL_ID}
    if isinstance(message, Grq):
        base |= {"rasAddress": _transport(message.ras_address), "endpointType": TERMINAL,
                 "endpointAlias": [("dialledDigits", message.ext)],
                 "cryptoTokens": _crypto_tokens(message.token, icv),
                 "supportsAssignedGK": False}
    elif isinstance(message, Gcf):
        base |= {"gatekeeperIdentifier": message.gatekeeper_id,
                 "rasAddress": _transport(message.ras_address),
                 "cryptoTokens": _crypto_tokens(message.token, icv)}
    elif isinstance(message, Grj):
        base |= {"gatekeeperIdentifier": message.gatekeeper_id}
        if message.reason == STALE_KEY:
            base["rejectReason"] = ("securityDenial", None)
        else:
            base["rejectReason"] = ("terminalExcluded", None)
            base["altGKInfo"] = {"alternateGatekeeper": [
                {"rasAddress": _transport(a), "needToRegister": True, "priority": i}
                for i, a in enumerate(message.alternates)], "altGKisPermanent": False}
        if message.re is not None:
            base["tokens"] = [{"tokenOID": OID_CLEAR_TOKEN,
                               "profileInfo": [_octets(ELEMENT_RE, message.re)]}]
        base["genericData"] = _generic([(PARAM_REASON, ("text", message.reason))])
    elif isinstance(message, Rrq):
        base |= {"discoveryComplete": True, "callSignalAddress": [],
                 "rasAddress": [_transport(message.ras_address)], "terminalType": TERMINAL,
                 "terminalAlias": [("dialledDigits", message.ext)],
                 "gatekeeperIdentifier": message.gatekeeper_id, "endpointVendor": VENDOR,
                 "cryptoTokens": _crypto_tokens(message.token, icv), "keepAlive": False,
                 "willSupplyUUIEs": False, "maintainConnection": False,
                 "genericData": _generic([
                     (PARAM_SPI, ("number32", message.spi)),
                     (PARAM_SUITES, ("raw", b"".join(bytes(s) for s in message.suites)))]),
                 "supportsAssignedGK": False}
    else:
        base |= {"callSignalAddress": [_transport(message.esp_address)],
                 "terminalAlias": [("dialledDigits", message.ext)],
                 "gatekeeperIdentifier": message.gatekeeper_id,
                 "endpointIdentifier": message.session_id, "timeToLive": message.lifetime_s,
                 "cryptoTokens": _crypto_tokens(message.token, icv),
                 "willRespondToIRR": False, "maintainConnection": False,
                 "genericData": _generic([
                     (PARAM_SPI, ("number32", message.spi)),
                     (PARAM_SUITES, ("raw", bytes(message.suite))),
                     (PARAM_LIFETIME, ("number32", message.lifetime_s)),
                     (PARAM_GRACE, ("number32", message.grace_s))])}
    return (_NAMES[type(message)], base)


def encode_message(message: Message, auth_key: bytes | None = None,
                   profile: Profile = Profile.DEFAULT) -> bytes:
    """The RAS message in aligned PER; the four authenticated ones with their ICV under K_a
    (`auth_key`), GRJ without."""
    if isinstance(message, Grj):
        return encode_ras(_value(message, b""))
    if auth_key is None:
        raise ValueError(f"{type(message).__name__} needs K_a")
    if message.token.algorithm != ICV_OID[profile]:
        message = replace(message, token=replace(message.token, algorithm=ICV_OID[profile]))
    zeros = bytes(SIZES[profile].icv)
    icv = compute_icv(auth_key, encode_ras(_value(message, zeros)), profile)
    data = encode_ras(_value(message, icv))
    # The silent-drop pitfall (../shared/asn1/h225/README.md): what we send must carry its
    # token, checked on the bytes themselves.
    if decode_message(data).message != replace(message, token=replace(message.token, icv=icv)):
        raise AssertionError("the encoded RAS message does not decode to what was encoded")
    return data


# --- from asn1tools values --------------------------------------------------------------------

def _require(fields: dict[str, Any], name: str, status: str = "MISSING_FIELD") -> Any:
    if name not in fields:
        raise MalformedMessage(status, name)
    return fields[name]


def _address(value: Any) -> Address:
    if not isinstance(value, tuple) or value[0] != "ipAddress":
        raise MalformedMessage("UNSUPPORTED_ADDRESS", "only ipAddress")
    return ".".join(str(b) for b in value[1]["ip"]), int(value[1]["port"])


def _dialled(aliases: Any) -> str:
    digits = [v for kind, v in aliases if kind == "dialledDigits"]
    if len(digits) != 1:
        raise MalformedMessage("NO_EXTENSION", "one dialledDigits alias")
    return str(digits[0])


def _elements(clear: dict[str, Any]) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    for element in clear.get("profileInfo", ()):
        kind_value = element.get("element")
        if kind_value is None or kind_value[0] != "octets" or element["elementID"] in found:
            raise MissingToken("BAD_TOKEN", "profile elements are distinct octet strings")
        found[element["elementID"]] = bytes(kind_value[1])
    return found


def _token(fields: dict[str, Any], need: tuple[int, ...]) -> tuple[Token, dict[str, Any]]:
    """The one H.235.1 token of an authenticated message, with every value this message
    must carry; MissingToken for anything absent, extra or of another layout."""
    tokens = fields.get("cryptoTokens")
    if not tokens:
        raise MissingToken("MISSING_TOKEN", "no cryptoTokens")
    if len(tokens) != 1 or tokens[0][0] != "nestedcryptoToken" \
            or tokens[0][1][0] != "cryptoHashedToken":
        raise MissingToken("BAD_TOKEN", "one nestedcryptoToken cryptoHashedToken")
    hashed = tokens[0][1][1]
    clear = hashed["hashedVals"]
    if hashed["tokenOID"] != OID_ALL_FIELDS or clear["tokenOID"] != OID_CLEAR_TOKEN:
        raise MissingToken("BAD_TOKEN", "tokenOIDs of the H.235.1 baseline profile")
    for name in ("timeStamp", "random", "sendersID"):
        if name not in clear:
            raise MissingToken("INCOMPLETE_TOKEN", name)
    elements = _elements(clear)
    for element_id in need:
        if element_id not in elements:
            raise MissingToken("INCOMPLETE_TOKEN", f"profile element {element_id}")
    if set(elements) - set(need):
        raise MissingToken("BAD_TOKEN", "unexpected profile elements")
    for element_id in (ELEMENT_G, ELEMENT_RE, ELEMENT_RG):
        if element_id in elements and len(elements[element_id]) != NONCE_BYTES:
            raise MissingToken("BAD_TOKEN", f"profile element {element_id} is 16 octets")
    if ELEMENT_CVM in elements and len(elements[ELEMENT_CVM]) != 3:
        raise MissingToken("BAD_TOKEN", "CV_m is 3 octets")
    data, bits = hashed["token"]["hash"]
    algorithm = hashed["token"]["algorithmOID"]
    sizes = {ICV_OID[p]: SIZES[p].icv for p in Profile}
    if algorithm not in sizes or bits != 8 * sizes[algorithm] or len(data) != sizes[algorithm]:
        raise MissingToken("BAD_TOKEN", "an ICV algorithm and length of a telekey profile")
    token = Token(clear["timeStamp"], clear["random"], clear["sendersID"],
                  clear.get("generalID"), elements.get(ELEMENT_G), elements.get(ELEMENT_CVM),
                  elements.get(ELEMENT_RE), elements.get(ELEMENT_RG), algorithm, bytes(data))
    return token, hashed


def _generic_params(fields: dict[str, Any]) -> dict[int, tuple[str, Any]]:
    for data in fields.get("genericData", ()):
        if data["id"] == ("nonStandard", TELEKEY_GUID):
            params: dict[int, tuple[str, Any]] = {}
            for parameter in data.get("parameters", ()):
                pid = parameter["id"]
                if pid[0] != "standard" or "content" not in parameter or pid[1] in params:
                    raise MalformedMessage("BAD_GENERIC_DATA", "telekey parameters")
                params[pid[1]] = parameter["content"]
            return params
    return {}


def _param(params: dict[int, tuple[str, Any]], pid: int, kind: str) -> Any:
    value = params.get(pid)
    if value is None or value[0] != kind:
        raise MalformedMessage("BAD_GENERIC_DATA", f"parameter {pid} ({kind})")
    return value[1]


def _suites(raw: bytes) -> tuple[tuple[int, int], ...]:
    if not raw or len(raw) % 2:
        raise MalformedMessage("BAD_GENERIC_DATA", "suites are pairs of octets")
    return tuple((raw[i], raw[i + 1]) for i in range(0, len(raw), 2))


def _zeroed(name: str, fields: dict[str, Any], hashed: dict[str, Any]) -> bytes:
    data, bits = hashed["token"]["hash"]
    hashed["token"]["hash"] = (bytes(len(data)), bits)
    try:
        return encode_ras((name, fields))
    except ValueError as exc:
        raise MalformedMessage("BAD_PER", str(exc)) from exc
    finally:
        hashed["token"]["hash"] = (data, bits)


def decode_message(data: bytes) -> Received:
    """One of the five messages; MalformedMessage (MissingToken for a token absent or
    incomplete) for anything else, never an unauthenticated GRQ/GCF/RRQ/RCF."""
    name, fields = decode_ras(data)
    seq = fields["requestSeqNum"]
    if fields.get("protocolIdentifier") != PROTOCOL_ID:
        raise MalformedMessage("BAD_PROTOCOL", str(fields.get("protocolIdentifier")))
    try:
        message: Message
        if name == "gatekeeperRequest":
            token, hashed = _token(fields, (ELEMENT_G, ELEMENT_CVM, ELEMENT_RE))
            message = Grq(seq, _address(fields["rasAddress"]),
                          _dialled(_require(fields, "endpointAlias")), token)
        elif name == "gatekeeperConfirm":
            token, hashed = _token(fields, (ELEMENT_RE, ELEMENT_RG))
            message = Gcf(seq, _require(fields, "gatekeeperIdentifier"),
                          _address(fields["rasAddress"]), token)
        elif name == "gatekeeperReject":
            reason = str(_param(_generic_params(fields), PARAM_REASON, "text"))
            alternates = tuple(_address(a["rasAddress"]) for a in fields.get(
                "altGKInfo", {}).get("alternateGatekeeper", ()))
            re = None
            for clear in fields.get("tokens", ()):
                re = _elements(clear).get(ELEMENT_RE, re)
            return Received(Grj(seq, _require(fields, "gatekeeperIdentifier"), reason,
                                alternates, re), None)
        elif name == "registrationRequest":
            token, hashed = _token(fields, (ELEMENT_RE, ELEMENT_RG))
            params = _generic_params(fields)
            addresses = fields["rasAddress"]
            if len(addresses) != 1:
                raise MalformedMessage("BAD_RRQ", "one rasAddress")
            message = Rrq(seq, _address(addresses[0]),
                          _dialled(_require(fields, "terminalAlias")),
                          _require(fields, "gatekeeperIdentifier"),
                          _param(params, PARAM_SPI, "number32"),
                          _suites(_param(params, PARAM_SUITES, "raw")), token)
        elif name == "registrationConfirm":
            token, hashed = _token(fields, (ELEMENT_RE, ELEMENT_RG))
            params = _generic_params(fields)
            suite = _suites(_param(params, PARAM_SUITES, "raw"))
            addresses = fields["callSignalAddress"]
            if len(suite) != 1 or len(addresses) != 1:
                raise MalformedMessage("BAD_RCF", "one suite, one ESP address")
            message = Rcf(seq, _require(fields, "gatekeeperIdentifier"),
                          _dialled(_require(fields, "terminalAlias")),
                          fields["endpointIdentifier"], _address(addresses[0]),
                          _param(params, PARAM_SPI, "number32"), suite[0],
                          _param(params, PARAM_LIFETIME, "number32"),
                          _param(params, PARAM_GRACE, "number32"), token)
        else:
            raise MalformedMessage("UNSUPPORTED_RAS", name)
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        raise MalformedMessage("BAD_RAS", f"{type(exc).__name__}: {exc}") from exc
    return Received(message, _zeroed(name, fields, hashed))


def verify_message(received: Received, auth_key: bytes, profile: Profile) -> None:
    """Raise IcvMismatch unless the message's ICV verifies under K_a in `profile` (whose algorithm
    it must name)."""
    message = received.message
    if isinstance(message, Grj) or received.icv_input is None:
        raise MissingToken("MISSING_TOKEN", "GRJ carries no ICV")
    if message.token.algorithm != ICV_OID[profile]:
        raise IcvMismatch("WRONG_ICV_ALGORITHM", message.token.algorithm)
    expected = compute_icv(auth_key, received.icv_input, profile)
    if not hmac.compare_digest(expected, message.token.icv):
        raise IcvMismatch("BAD_ICV")
