"""The device restriction authorization data (telekey, seed 001): a ticket issued on a
manufacturer certificate says the device is unprovisioned and which numbers it may call
(customer service, emergency), and the certificate chain it logged in with, so that the
signaling controller can report the device to the provisioning service (seed 001, FIG. 7:
"the manufacturer-signed CTA certificate, obtained by the signaling controller during the
PKINIT exchange"). Carried as ad-type AD_TELEKEY_DEVICE_RESTRICTION (a negative,
local-use value, RFC 4120 §7.5.4) inside AD-IF-RELEVANT, so other services may ignore it."""

from dataclasses import dataclass

from common.messages.asn1 import telekey as asn1
from common.messages.base import asn1_type, codec
from common.messages.padata import flatten_authorization_data, wrap_if_relevant
from common.messages.types import AuthorizationDataEntry

AD_TELEKEY_DEVICE_RESTRICTION = -700
STATE_UNPROVISIONED = 1


@asn1_type(asn1.DeviceRestriction)
@dataclass(frozen=True, slots=True)
class DeviceRestriction:
    state: int
    allowed_numbers: tuple[str, ...]
    # The DER of the device's certificate chain as the KDC verified it (device certificate
    # first, no anchor); None in tickets from KDCs that do not add it.
    certificates: tuple[bytes, ...] | None = None


decode_device_restriction, encode_device_restriction = codec(asn1.DeviceRestriction,
                                                             DeviceRestriction)


def restriction_authorization_data(restriction: DeviceRestriction
                                   ) -> tuple[AuthorizationDataEntry, ...]:
    return (wrap_if_relevant((AuthorizationDataEntry(AD_TELEKEY_DEVICE_RESTRICTION,
                                                     encode_device_restriction(restriction)),)),)


def find_restriction(entries: tuple[AuthorizationDataEntry, ...] | None
                     ) -> DeviceRestriction | None:
    """The device restriction in a ticket's authorization data, if any."""
    for entry in flatten_authorization_data(entries):
        if entry.ad_type == AD_TELEKEY_DEVICE_RESTRICTION:
            return decode_device_restriction(entry.ad_data)
    return None
