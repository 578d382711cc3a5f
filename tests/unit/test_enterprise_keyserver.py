"""The key generating agent (keyserver/agent.py) over a SQLite database in a temporary
directory and a master key stash, without sockets: generators never repeat across restarts,
K_g is the derivation, two servers with one seed agree, K_m rotation changes CV_m and forgets
the old K_m, revocation, and K_m never stored in plaintext."""

import pytest

from common.enterprise.generator import make_generator, parse_generator
from common.enterprise.keys import Profile, check_value, generator_key, master_key_from_seed
from keyserver.agent import (
    Conflict,
    ExtensionRevoked,
    KeyAgent,
    NoMasterKey,
    StartError,
    UnknownExtension,
    UnknownGenerator,
)
from keyserver.app import openapi_schemas
from keyserver.db import Database
from keyserver.settings import KeyserverSettings
from runtime.master_key_store import StashStore

SEED = bytes(range(100, 132))
SEED2 = bytes(range(200, 232))


def make_agent(tmp_path, server_id=1, profile=Profile.SEED, block=4, name="ks", **kwargs):
    db = Database(f"sqlite:///{tmp_path / name}.db")
    return KeyAgent(server_id=server_id, profile=profile, block=block, db=db, token=None,
                    master_key_store=lambda: StashStore(tmp_path / f"{name}.stash", "keyserver"),
                    **kwargs)


@pytest.fixture
async def agent(tmp_path):
    agent = make_agent(tmp_path)
    await agent.start()
    await agent.set_seed(SEED, rotate=False)
    yield agent
    await agent.close()


async def test_no_key_files_before_the_seed(tmp_path):
    agent = make_agent(tmp_path)
    await agent.start()
    with pytest.raises(NoMasterKey):
        await agent.issue("2001")
    await agent.close()


@pytest.mark.parametrize("profile", list(Profile))
async def test_key_file_holds_the_derived_kg(tmp_path, profile):
    agent = make_agent(tmp_path, profile=profile)
    await agent.start()
    await agent.set_seed(SEED, rotate=False)
    issued = await agent.issue("2001")
    km = master_key_from_seed(SEED, profile)
    assert issued.generator_key == generator_key(km, issued.generator, profile)
    assert issued.check_value == check_value(km, profile)
    assert parse_generator(issued.generator).server_id == 1
    assert (await agent.generator_key_for(issued.generator, "2001")) == issued
    await agent.close()


async def test_generators_never_repeat_across_restarts(tmp_path):
    seen = []
    for _ in range(3):
        agent = make_agent(tmp_path, block=3)
        await agent.start()
        if agent.master_key is None:
            await agent.set_seed(SEED, rotate=False)
        seen += [(await agent.issue("2001")).generator for _ in range(5)]
        await agent.close()
    assert len(set(seen)) == len(seen) == 15
    counters = [parse_generator(g).counter for g in seen]
    assert counters == sorted(counters)


async def test_advanced_service_checks_the_generator(agent, tmp_path):
    issued = await agent.issue("2001")
    with pytest.raises(UnknownGenerator, match="EXTENSION_MISMATCH"):
        await agent.generator_key_for(issued.generator, "2002")
    counter = parse_generator(issued.generator).counter
    with pytest.raises(UnknownGenerator, match="NOT_ISSUED"):
        await agent.generator_key_for(make_generator(1, "2001", counter + 1000), "2001")
    with pytest.raises(UnknownGenerator, match="BAD_GENERATOR"):
        await agent.generator_key_for(bytes(15), "2001")
    # Another key server's generator: this one derives the same K_g from the same seed.
    other = make_agent(tmp_path, server_id=2, name="other")
    await other.start()
    await other.set_seed(SEED, rotate=False)
    theirs = await other.issue("2001")
    assert theirs.generator != issued.generator
    assert (await agent.generator_key_for(theirs.generator, "2001")) == theirs
    await other.close()


async def test_rotation_changes_cv_and_forgets_the_old_km(agent, tmp_path):
    before = await agent.issue("2001")
    with pytest.raises(Conflict, match="MASTER_KEY_SET"):
        await agent.set_seed(SEED2, rotate=False)
    with pytest.raises(Conflict, match="CHECK_VALUE_UNCHANGED"):
        await agent.set_seed(SEED, rotate=True)
    new = await agent.set_seed(SEED2, rotate=True)
    assert new.kmvno == 2 and new.check_value != before.check_value
    after = await agent.generator_key_for(before.generator, "2001")
    assert after.check_value == new.check_value
    assert after.generator_key != before.generator_key
    rows = await agent.master_key_history()
    assert [(r.kmvno, r.retired is None, r.wrapped is None) for r in rows] == [
        (1, False, True), (2, True, False)]
    data = (tmp_path / "ks.db").read_bytes()
    for seed in (SEED, SEED2):
        assert master_key_from_seed(seed, Profile.SEED) not in data
        assert seed not in data


async def test_rotation_needs_a_seed_first(tmp_path):
    agent = make_agent(tmp_path)
    await agent.start()
    with pytest.raises(Conflict, match="NO_MASTER_KEY"):
        await agent.set_seed(SEED, rotate=True)
    await agent.close()


async def test_restart_loads_the_wrapped_km(tmp_path):
    agent = make_agent(tmp_path)
    await agent.start()
    first = await agent.set_seed(SEED, rotate=False)
    await agent.close()
    agent = make_agent(tmp_path)
    await agent.start()
    assert agent.master_key is not None and agent.master_key.check_value == first.check_value
    await agent.close()
    wrong = make_agent(tmp_path, profile=Profile.DEFAULT)
    with pytest.raises(StartError, match="seed profile"):
        await wrong.start()
    await wrong.close()


async def test_revoke_and_restore(agent):
    old = await agent.issue("2001")
    await agent.revoke_extension("2001")
    with pytest.raises(ExtensionRevoked):
        await agent.issue("2001")
    with pytest.raises(ExtensionRevoked):
        await agent.generator_key_for(old.generator, "2001")
    await agent.restore_extension("2001")
    with pytest.raises(UnknownGenerator, match="BEFORE_RESTORE"):
        await agent.generator_key_for(old.generator, "2001")
    new = await agent.issue("2001")
    assert (await agent.generator_key_for(new.generator, "2001")) == new
    with pytest.raises(Conflict):
        await agent.restore_extension("2001")
    rows = {row.ext: row for row in await agent.extensions()}
    assert rows["2001"].issued == 2 and not rows["2001"].revoked


async def test_closed_server_gives_only_added_extensions(tmp_path):
    agent = make_agent(tmp_path, issue_unknown_extensions=False)
    await agent.start()
    await agent.set_seed(SEED, rotate=False)
    with pytest.raises(UnknownExtension):
        await agent.issue("2001")
    await agent.add_extension("2001")
    assert (await agent.issue("2001")).ext == "2001"
    await agent.close()


def test_settings_refuse_a_token_for_the_seed_profile(tmp_path):
    common = dict(server_id=1, tls_cert_file=tmp_path, tls_key_file=tmp_path,
                  advanced_client_ca_files=[tmp_path], admin_client_ca_files=[tmp_path])
    with pytest.raises(ValueError, match="seed profile"):
        KeyserverSettings(profile="seed", km_token_label="t", pkcs11_pin_file=tmp_path,
                          **common)
    with pytest.raises(ValueError, match="pkcs11_pin_file"):
        KeyserverSettings(km_token_label="t", **common)
    with pytest.raises(ValueError):
        KeyserverSettings(**{**common, "server_id": 0})


def test_openapi_schemas_describe_each_service():
    schemas = openapi_schemas()
    assert set(schemas["basic"]["paths"]) == {"/kkg.txt", "/healthz"}
    assert "text/plain; charset=us-ascii" in \
        schemas["basic"]["paths"]["/kkg.txt"]["get"]["responses"]["200"]["content"]
    assert set(schemas["advanced"]["paths"]) == {"/v1/kg"}
    assert {"/v1/seed", "/v1/rotate", "/v1/extensions",
            "/v1/extensions/{ext}/revoke"} <= set(schemas["admin"]["paths"])


async def test_rekey_master_rewraps_km(tmp_path):
    from typer.testing import CliRunner

    from keyserver.cli import app

    db = Database(f"sqlite:///{tmp_path / 'ks.db'}")
    agent = KeyAgent(server_id=1, profile=Profile.SEED, block=4, db=db, token=None,
                     master_key_store=lambda: StashStore(tmp_path / "ks.db.stash", "keyserver"))
    await agent.start()
    first = await agent.set_seed(SEED, rotate=False)
    await agent.close()
    config = tmp_path / "keyserver.toml"
    config.write_text(f'[keyserver]\nserver_id = 1\nprofile = "seed"\n'
                      f'database_url = "sqlite:///{tmp_path / "ks.db"}"\n'
                      f'tls_cert_file = "{tmp_path}"\ntls_key_file = "{tmp_path}"\n'
                      f'advanced_client_ca_files = ["{tmp_path}"]\n'
                      f'admin_client_ca_files = ["{tmp_path}"]\n')
    result = CliRunner().invoke(app, ["rekey-master", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "master key version 2" in result.output
    row = Database(f"sqlite:///{tmp_path / 'ks.db'}").current_master_key()
    assert row is not None and row.mkvno == 2
    agent = KeyAgent(server_id=1, profile=Profile.SEED, block=4,
                     db=Database(f"sqlite:///{tmp_path / 'ks.db'}"), token=None,
                     master_key_store=lambda: StashStore(tmp_path / "ks.db.stash", "keyserver"))
    await agent.start()
    assert agent.master_key is not None
    assert agent.master_key.check_value == first.check_value
    await agent.close()
