"""Carrying out the queued steps of lifecycle changes (provisioning/flows.py's `tasks` rows):
head-end access-list changes over mutual TLS, and KDC customer records through the KDC's own
command (`telekey customer ...`).

Why the KDC's command and not its database or an API: `provisioning/` may not import `kdc/`
(tests/unit/test_layering.py), the KDC has no network interface for administration, and the
schema of its customer table belongs to `kdc/db.py` (its migrations); running its command
keeps every write to the KDC's database in the KDC's code. It costs a process start (about
two seconds here) per record, off the request path. When the KDC reads provisioning's records
itself (seed 001's "one source of truth"), this step goes away.

Each step is sent again until acknowledged: a head-end change carries `change_id` =
`prov-<task id>`, which the head-end applies once; `customer add` of a number already present
becomes `customer activate`, and suspending a number the KDC does not have is done already.
"""

import asyncio
import sys
from pathlib import Path
from typing import Any

import httpx

from common.log import get_logger
from common.provisioning.headend import AccessChange, encode_change
from provisioning.flows import Provisioner
from provisioning.settings import HeadendLink

log = get_logger(__name__)


class StepFailed(Exception):
    """A step that did not get its acknowledgement; it is tried again later."""


class HeadendClient:
    """Calls head-end agents (`PUT /v1/access/{mac}`) over mutual TLS."""

    def __init__(self, links: dict[str, HeadendLink], verify: Any, timeout: float) -> None:
        self.links = links
        self._client = httpx.AsyncClient(verify=verify, timeout=timeout, trust_env=False)

    async def apply(self, headend: str, change: AccessChange) -> dict[str, Any]:
        link = self.links.get(headend)
        if link is None:
            raise StepFailed(f"head-end {headend} is not configured")
        url = f"{link.url.rstrip('/')}/v1/access/{change.mac}"
        try:
            response = await self._client.put(url, json=encode_change(change))
        except httpx.HTTPError as exc:
            raise StepFailed(f"{headend}: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise StepFailed(f"{headend}: HTTP {response.status_code}: {response.text[:200]}")
        ack: dict[str, Any] = response.json()
        if ack.get("change_id") != change.change_id:
            raise StepFailed(f"{headend}: acknowledged another change: {ack}")
        return ack

    async def close(self) -> None:
        await self._client.aclose()


class KdcRecords:
    """The KDC's customer records through `telekey customer add|activate|suspend`."""

    def __init__(self, database_url: str, command: list[str] | None = None,
                 timeout: float = 60.0) -> None:
        self.database_url = database_url
        self.command = command or [sys.executable, "-m", "telekey"]
        self.timeout = timeout

    async def _run(self, *args: str) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            *self.command, "customer", *args, "--db", self.database_url,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, cwd=Path.cwd())
        try:
            output, _ = await asyncio.wait_for(process.communicate(), self.timeout)
        except TimeoutError as exc:
            process.kill()
            await process.wait()
            raise StepFailed("telekey customer: timed out") from exc
        return process.returncode or 0, output.decode(errors="replace").strip()

    async def apply(self, action: str, number: str, mac: str) -> dict[str, Any]:
        if action == "add":
            code, output = await self._run("add", "--number", number, "--mac", mac)
            if code == 0:
                return {"result": "added"}
            if "already there" not in output:
                raise StepFailed(f"telekey customer add: {output[-300:]}")
            code, output = await self._run("activate", "--number", number)
            if code == 0:
                return {"result": "activated"}
            raise StepFailed(f"telekey customer activate: {output[-300:]}")
        if action == "suspend":
            code, output = await self._run("suspend", "--number", number)
            if code == 0:
                return {"result": "suspended"}
            if output.startswith("no customer"):
                return {"result": "absent"}
            raise StepFailed(f"telekey customer suspend: {output[-300:]}")
        raise StepFailed(f"unknown KDC action {action}")


class TaskRunner:
    """Sends due steps, records acknowledgements and failures; wakes on `wake()` (a change
    was just started) or every `poll_s`; also returns numbers whose quarantine ended and
    rewrites the CRL daily."""

    def __init__(self, provisioner: Provisioner, headends: HeadendClient | None,
                 kdc: KdcRecords | None, poll_s: float, parallel: int = 8) -> None:
        self.provisioner = provisioner
        self.headends = headends
        self.kdc = kdc
        self.poll_s = poll_s
        self._wake = asyncio.Event()
        self._limit = asyncio.Semaphore(parallel)

    def wake(self) -> None:
        self._wake.set()

    async def _step(self, task: dict[str, Any]) -> None:
        payload = task["payload"]
        async with self._limit:
            try:
                if task["kind"] == "headend":
                    if self.headends is None:
                        raise StepFailed("no head-ends are configured")
                    change = AccessChange(f"prov-{task['id']}", payload["mac"],
                                          payload["action"], payload.get("number"),
                                          tuple(payload.get("options", ())))
                    result = await self.headends.apply(payload["headend"], change)
                elif task["kind"] == "kdc":
                    if self.kdc is None:
                        raise StepFailed("no KDC database is configured")
                    result = await self.kdc.apply(payload["action"], payload["number"],
                                                  payload["mac"])
                else:
                    raise StepFailed(f"unknown task kind {task['kind']}")
            except StepFailed as exc:
                retry_at = await asyncio.to_thread(self.provisioner.task_failed, task["id"],
                                                   str(exc))
                log.warning("task_failed", task=task["id"], kind=task["kind"],
                            attempts=task["attempts"] + 1, error=str(exc),
                            retry_at=retry_at.isoformat())
                return
        await asyncio.to_thread(self.provisioner.task_done, task["id"], result)
        log.info("task_done", task=task["id"], kind=task["kind"], change=task["change_id"],
                 **{k: v for k, v in payload.items() if k in ("headend", "mac", "action",
                                                                "number")})

    async def run_once(self) -> int:
        due = await asyncio.to_thread(self.provisioner.due_tasks)
        await asyncio.gather(*(self._step(task) for task in due))
        return len(due)

    async def run(self) -> None:
        """Forever (cancel to stop)."""
        crl_written = asyncio.get_running_loop().time()
        revocations = await asyncio.to_thread(self.provisioner.revocation_state)
        while True:
            self._wake.clear()
            try:
                done = await self.run_once()
                released = await asyncio.to_thread(self.provisioner.sweep_quarantine)
                if released:
                    log.info("numbers_returned", numbers=released)
                # The CRL again when another process revoked a certificate, and daily.
                state = await asyncio.to_thread(self.provisioner.revocation_state)
                now = asyncio.get_running_loop().time()
                if state != revocations or now - crl_written >= 86_400:
                    await asyncio.to_thread(self.provisioner.write_crl)
                    revocations, crl_written = state, now
            except Exception:  # a database outage: log it and keep trying
                log.exception("task_runner_error")
                done = 0
            if done:
                continue  # a completed step may have unblocked the next one of its target
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            except TimeoutError:
                pass
