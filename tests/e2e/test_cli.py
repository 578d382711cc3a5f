"""The `telekey` command as a user runs it: `telekey lab` end to end against a live MIT realm,
`telekey decode` on MIT's bytes, and each service's `python -m <package>`."""

import subprocess
import sys

import pytest

from tests.conftest import MIT_FIXTURES

pytestmark = pytest.mark.e2e


def telekey(*args, check=True, timeout=120):
    result = subprocess.run([sys.executable, "-m", "telekey", *args], capture_output=True,
                            text=True, timeout=timeout, check=False)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_lab_runs_end_to_end(lab_run):
    # The whole system, four parts, run once per session (tests/e2e/conftest.py).
    assert lab_run.returncode == 0, lab_run.stdout + lab_run.stderr
    out, workdir = lab_run.stdout, lab_run.workdir
    assert "MIT kinit logs in to MIT krb5kdc with telekey's keytab" in out
    assert "session key in ticket matches the cache" in out
    assert out.count("krbtgt/INTEROP.TEST@INTEROP.TEST") >= 3
    assert "lab finished" in out
    assert "sigctl/sc2.lab.test@LAB.TEST" in out  # through telekey's TGS exchange
    assert "tgs_req" in out and "as_req" in out
    assert "self-issued certificate for 00:1a:2b:3c:4d:5e" in out
    assert "REPLAY" in out
    assert "(ECDH)" in out
    assert (workdir / "telekey.ccache").exists()
    # The controller part: SAs, echo through ESP, recovery without PKINIT, tshark's view.
    assert "new PKINIT logins at the KDC: 0" in out
    assert "'still there?'" in out and "0 malformed" in out
    assert (workdir / "controller" / "controller.pcap").exists()
    assert (workdir / "controller" / "esp_sa").read_text().count("AES-GCM") == 8
    # The calls part's enterprise phone: key file, registration, a call to a cable device
    # (the lab stops if what comes back differs from what B played), RAS in the capture.
    assert "enterprise phone 1500" in out and "registered with sc1 (GRQ, GCF, RRQ, RCF)" in out
    assert "phone 1500 calls B across sc1 -> sc2: hung up;" in out
    assert "H.225.0 RAS: GRQ, GCF, RRQ, RCF;" in out


def test_decode_shows_and_decrypts_ticket():
    out = telekey("decode", str(MIT_FIXTURES / "apreq_sc1.der"), "-K",
                  str(MIT_FIXTURES / "sigctl-sc1.keytab")).stdout
    assert "decrypted ticket for sigctl/sc1.example.test@EXAMPLE.TEST" in out
    assert "name_string: ('phone1',)" in out
    assert "<32 secret bytes>" in out
    assert "059cc2a0" not in out  # the session key is never printed


def test_decode_rejects_garbage_cleanly(tmp_path):
    bad = tmp_path / "bad.der"
    bad.write_bytes(b"\x6e\x03\x01\x02")
    result = telekey("decode", str(bad), check=False)
    assert result.returncode == 1
    assert result.stderr.startswith(f"{bad}: TRUNCATED") and "Traceback" not in result.stderr


@pytest.mark.parametrize("package", ["sigctl", "keyserver", "provisioning"])
def test_each_package_runs_as_module(package):
    result = subprocess.run([sys.executable, "-m", package, "status"], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0 and package in result.stdout
