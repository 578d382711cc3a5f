"""The provisioning service's asyncio glue: three HTTPS listeners (runtime/https_server.py), each
with its own TLS context, and the task runner that carries out queued lifecycle steps.

- `api`: mutual TLS against `api_client_ca_files` (controllers, other operator servers);
- `billing`: mutual TLS against `billing_client_ca_files` (the billing host);
- `console`: server-authenticated TLS; staff log in (provisioning/console.py).

At start: the schema is migrated (Alembic), the number pools of the settings are added, the
CRL is written. `listening` is logged once every listener serves, with the ports bound;
SIGTERM and SIGINT stop it cleanly.
"""

import asyncio
import signal
import ssl
from datetime import timedelta
from pathlib import Path

from cryptography import x509

from common.log import get_logger
from common.provisioning.records import parse_number_range
from provisioning.api import api_app, billing_app
from provisioning.ca import OperatorCa, RequestSigner
from provisioning.console import console_app
from provisioning.db import make_engine, migrate
from provisioning.flows import Policy, Provisioner
from provisioning.settings import ProvisioningSettings
from provisioning.staff import StaffStore
from provisioning.tasks import HeadendClient, KdcRecords, TaskRunner
from runtime.https_server import bind, client_context, listener, server_context, start, stop
from runtime.process import settle_heap

log = get_logger(__name__)


def load_anchors(paths: list[Path]) -> tuple[x509.Certificate, ...]:
    anchors: list[x509.Certificate] = []
    for path in paths:
        anchors.extend(x509.load_pem_x509_certificates(path.read_bytes()))
    return tuple(anchors)


def policy_from(settings: ProvisioningSettings) -> Policy:
    return Policy(
        headends=frozenset(settings.headends),
        service_options=tuple(settings.service_options),
        quarantine=timedelta(seconds=settings.number_quarantine_s),
        device_cert_lifetime=timedelta(days=settings.device_cert_days),
        repair_cert_lifetime=timedelta(hours=settings.repair_cert_hours),
        kdc_records=settings.kdc_database_url is not None,
        manufacturer_anchors=load_anchors(settings.manufacturer_anchor_files),
        crl_lifetime=timedelta(seconds=settings.crl_lifetime_s),
        crl_file=settings.crl_file)


def open_provisioner(settings: ProvisioningSettings, *, with_ca: bool = True) -> Provisioner:
    """The flows over the configured database, migrated to the current schema."""
    engine = make_engine(settings.database_url)
    migrate(engine)
    ca = OperatorCa.from_files(settings.ca_cert_file, settings.ca_key_file) if with_ca else None
    provisioner = Provisioner(engine, policy_from(settings), ca)
    provisioner.retry_base = timedelta(seconds=settings.task_retry_s)
    return provisioner


def add_configured_numbers(provisioner: Provisioner, settings: ProvisioningSettings) -> None:
    for name, link in settings.headends.items():
        numbers = [n for text in link.numbers for n in parse_number_range(text)]
        if numbers:
            added = provisioner.add_numbers("settings", name, numbers)
            if added:
                log.info("numbers_added", headend=name, count=added)


async def serve(settings: ProvisioningSettings) -> None:
    """Serve the three listeners and run queued steps until SIGTERM/SIGINT."""
    provisioner = await asyncio.to_thread(open_provisioner, settings)
    await asyncio.to_thread(add_configured_numbers, provisioner, settings)
    await asyncio.to_thread(provisioner.write_crl)
    signer = None
    if settings.request_signer_cert_file and settings.request_signer_key_file:
        signer = RequestSigner(settings.request_signer_cert_file,
                               settings.request_signer_key_file)
    headends = None
    if settings.headends:
        headends = HeadendClient(dict(settings.headends),
                                 client_context(settings.headend_ca_files,
                                                settings.client_cert_file,
                                                settings.client_key_file),
                                 settings.headend_timeout_s)
    kdc = None
    if settings.kdc_database_url is not None:
        kdc = KdcRecords(settings.kdc_database_url, settings.kdc_command or None)
    runner = TaskRunner(provisioner, headends, kdc, settings.task_poll_s)
    staff = StaffStore(provisioner.engine)

    def context(client_cas: list[Path] | None) -> ssl.SSLContext:
        return server_context(settings.tls_cert_file, settings.tls_key_file,
                              settings.tls_min_version, client_cas)

    listeners = [
        listener("api", api_app(provisioner, signer, settings.realm),
                 context(settings.api_client_ca_files),
                 bind(settings.listen_host, settings.api_port)),
        listener("billing", billing_app(provisioner), context(settings.billing_client_ca_files),
                 bind(settings.listen_host, settings.billing_port)),
        listener("console", console_app(provisioner, staff,
                                        timedelta(seconds=settings.session_lifetime_s),
                                        runner.wake),
                 context(None), bind(settings.console_host, settings.console_port)),
    ]
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    ticks = await start(listeners)
    work = asyncio.create_task(runner.run())
    log.info("listening", host=settings.listen_host, console_host=settings.console_host,
             ports={item.name: item.port for item in listeners}, port=listeners[0].port,
             headends=sorted(settings.headends), kdc_records=kdc is not None,
             database=provisioner.engine.dialect.name)
    settle_heap()
    try:
        await stopping.wait()
    finally:
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
        await stop(listeners, ticks)
        if headends is not None:
            await headends.close()
        provisioner.engine.dispose()
        log.info("stopped")
