"""common.pki.chain against the MIT test CA: chains, validity, EKU and id-pkinit-san."""

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from common.codes import ErrorCode
from common.pki.chain import (
    CantVerifyCertificate,
    InconsistentKeyPurpose,
    InvalidCertificate,
    is_kdc_certificate,
    pkinit_san_names,
    verify_chain,
    verify_client_eku,
)
from tests.conftest import MIT_FIXTURES

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def pem(name):
    return x509.load_pem_x509_certificate((MIT_FIXTURES / name).read_bytes())


def self_signed(name: str) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)])
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))


def test_chain_to_anchor():
    chain = verify_chain(pem("phone1.pem"), [], [pem("cacert.pem")], NOW)
    assert chain == [pem("phone1.pem"), pem("cacert.pem")]


def test_untrusted_anchor_is_70():
    with pytest.raises(CantVerifyCertificate) as err:
        verify_chain(pem("phone1.pem"), [], [self_signed("Other CA")], NOW)
    assert err.value.code is ErrorCode.KDC_ERR_CANT_VERIFY_CERTIFICATE


def test_expired_is_71():
    with pytest.raises(InvalidCertificate) as err:
        verify_chain(pem("phone1.pem"), [], [pem("cacert.pem")], datetime(2030, 1, 1, tzinfo=UTC))
    assert err.value.code is ErrorCode.KDC_ERR_INVALID_CERTIFICATE


def test_leaf_cannot_act_as_issuer():
    with pytest.raises(CantVerifyCertificate):
        verify_chain(pem("phone1.pem"), [pem("kdc.pem")], [self_signed("x")], NOW)


def test_ekus_and_names():
    verify_client_eku(pem("phone1.pem"))
    with pytest.raises(InconsistentKeyPurpose) as err:
        verify_client_eku(pem("kdc.pem"))
    assert err.value.code is ErrorCode.KDC_ERR_INCONSISTENT_KEY_PURPOSE
    (name,) = pkinit_san_names(pem("phone1.pem"))
    assert (name.realm, name.principal_name.name_string) == ("EXAMPLE.TEST", ("phone1",))
    assert is_kdc_certificate(pem("kdc.pem"), "EXAMPLE.TEST")
    assert not is_kdc_certificate(pem("phone1.pem"), "EXAMPLE.TEST")
