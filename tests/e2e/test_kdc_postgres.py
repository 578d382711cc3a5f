"""The KDC on a real PostgreSQL server: MIT kinit logs in through two KDC processes sharing
one database, for a device added (through the CLI) after both started."""

import pytest

from telekey.kdc_process import start_kdc, telekey_cmd, write_kdc_config
from tests.conftest import MIT_FIXTURES
from tests.e2e.test_kdc_mit_kinit import REALM, kinit, klist, mit_env
from tests.postgres import postgres_server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def postgres_url():
    with postgres_server() as url:
        yield url


def test_two_kdcs_share_postgres(postgres_url, tmp_path):
    stash = tmp_path / "kdc.stash"  # the master key; a PostgreSQL URL gives it no default place
    telekey_cmd("realm", "init", "--realm", REALM, "--db", postgres_url, "--stash", str(stash))
    kdcs = []
    try:
        for name in ("a", "b"):
            directory = tmp_path / name
            directory.mkdir()
            config = write_kdc_config(directory, realm=REALM, db_url=postgres_url,
                                      cert=MIT_FIXTURES / "kdc.pem",
                                      key=MIT_FIXTURES / "kdc.key",
                                      anchors=[MIT_FIXTURES / "cacert.pem"],
                                      master_key_stash_file=str(stash))
            kdcs.append(start_kdc(config, directory / "kdc.log"))
        telekey_cmd("principal", "add", "phone1", "--db", postgres_url)
        for kdc in kdcs:
            client_dir = tmp_path / f"client-{kdc.port}"
            client_dir.mkdir()
            env = mit_env(client_dir, kdc.port)
            result = kinit(env)
            assert result.returncode == 0, result.stderr[-3000:]
            assert f"krbtgt/{REALM}@{REALM}" in klist(env)
            events = [e["code"] for e in kdc.log_events() if e.get("event") == "as_req"]
            assert events[-1] == 0
    finally:
        for kdc in kdcs:
            kdc.stop()
