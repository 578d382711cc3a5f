"""A call's media: PCMU in RTP, protected with SRTP by libsrtp (pylibsrtp), on a UDP socket of
its own. The sender starts at a random sequence number, timestamp and SSRC (RFC 3550 §5.1)
and sends a 20 ms packet every 20 ms; the receiver keeps what it decodes, in sequence order.

Sources: a WAV file (8 kHz, 16-bit mono; played once), a tone, or `echo` — every packet
received is sent straight back (the network echo server)."""

import asyncio
import math
import os
import secrets
import time
import wave
from array import array
from pathlib import Path
from typing import Any

from pylibsrtp import Error as SrtpError
from pylibsrtp import Policy, Session

from common.calls.keys import SrtpKeys
from common.calls.rtp import (
    PCMU,
    SAMPLES_PER_PACKET,
    RtpPacket,
    decode_rtp,
    encode_rtp,
    ulaw_decode,
    ulaw_encode,
)
from common.calls.sdp import MediaDescription
from common.errors import MalformedMessage

PROFILES = {"AES_CM_128_HMAC_SHA1_80": Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
            "AEAD_AES_128_GCM": Policy.SRTP_PROFILE_AEAD_AES_128_GCM}
RATE = 8000


def srtp_session(keys: SrtpKeys, profile: str, outbound: bool) -> Session:
    policy = Policy(key=keys.master_key + keys.master_salt,
                    ssrc_type=Policy.SSRC_ANY_OUTBOUND if outbound else Policy.SSRC_ANY_INBOUND,
                    srtp_profile=PROFILES[profile])
    return Session(policy=policy)


def read_wav(path: Path) -> array:  # type: ignore[type-arg]
    with wave.open(str(path), "rb") as wav:
        if (wav.getframerate(), wav.getsampwidth(), wav.getnchannels()) != (RATE, 2, 1):
            raise ValueError(f"{path}: need 8 kHz 16-bit mono")
        return array("h", wav.readframes(wav.getnframes()))


def write_wav(path: Path, samples: array) -> None:  # type: ignore[type-arg]
    """Write a 16-bit mono WAV; it appears under `path` complete or not at all (written
    beside it, then renamed), so whoever waits for a recording never reads half of one."""
    partial = path.with_name(path.name + ".partial")
    with wave.open(str(partial), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(samples.tobytes())
    os.replace(partial, path)


def load_source(spec: str) -> array:  # type: ignore[type-arg]
    """What to play: `tone[:FREQUENCY[:SECONDS]]` (default 440 Hz, 2 s) or a WAV file."""
    if spec == "tone" or spec.startswith("tone:"):
        parts = spec.split(":")[1:]
        return tone(float(parts[1]) if len(parts) > 1 else 2.0,
                    float(parts[0]) if parts else 440.0)
    return read_wav(Path(spec))


def tone(seconds: float, frequency: float = 440.0) -> array:  # type: ignore[type-arg]
    return array("h", (int(8000 * math.sin(2 * math.pi * frequency * n / RATE))
                       for n in range(int(seconds * RATE))))


class MediaSession(asyncio.DatagramProtocol):
    def __init__(self, source: array | str | None) -> None:  # type: ignore[type-arg]
        self.protect: Session | None = None  # until the call key is known
        self.unprotect: Session | None = None
        self.source = source  # samples to play once, "echo", or None (silent)
        self.transport: Any = None
        self.remote: tuple[str, int] | None = None
        self.sequence = secrets.randbits(16)
        self.timestamp = secrets.randbits(32)
        self.ssrc = secrets.randbits(32)
        self.received: dict[int, bytes] = {}  # extended sequence → PCMU payload
        self._highest: int | None = None
        self.sent = 0
        self.dropped = 0
        self.first_received: float | None = None
        self.sending_done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def set_keys(self, send_keys: SrtpKeys, receive_keys: SrtpKeys, profile: str) -> None:
        self.protect = srtp_session(send_keys, profile, outbound=True)
        self.unprotect = srtp_session(receive_keys, profile, outbound=False)

    async def open(self, host: str) -> int:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(host, 0))
        return int(self.transport.get_extra_info("sockname")[1])

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def start(self, remote: MediaDescription, play: bool = True) -> None:
        """Send to `remote` from now on (echoes included); `play` starts the source too."""
        self.remote = (remote.host, remote.rtp_port)
        if not play:
            return
        if isinstance(self.source, array):
            self._task = asyncio.ensure_future(self._play(self.source))
        else:
            self.sending_done.set()

    def _send(self, payload: bytes) -> None:
        assert self.remote is not None and self.protect is not None
        packet = encode_rtp(RtpPacket(PCMU, self.sequence, self.timestamp, self.ssrc, payload,
                                      marker=self.sent == 0))
        self.transport.sendto(self.protect.protect(packet), self.remote)
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + len(payload)) & 0xFFFFFFFF
        self.sent += 1

    async def _play(self, samples: array) -> None:  # type: ignore[type-arg]
        started = time.monotonic()
        for index, offset in enumerate(range(0, len(samples), SAMPLES_PER_PACKET)):
            self._send(ulaw_encode(samples[offset:offset + SAMPLES_PER_PACKET]))
            delay = started + (index + 1) * SAMPLES_PER_PACKET / RATE - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        self.sending_done.set()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.unprotect is None:
            self.dropped += 1
            return
        try:
            packet = decode_rtp(self.unprotect.unprotect(data))
        except (SrtpError, MalformedMessage):
            self.dropped += 1
            return
        if self.first_received is None:
            self.first_received = time.monotonic()
        self.received[self._extend(packet.sequence)] = packet.payload
        if self.source == "echo" and self.remote is not None:
            self._send(packet.payload)

    def _extend(self, sequence: int) -> int:
        """RFC 3550 A.1-style extended sequence number, so a wrap keeps the order."""
        if self._highest is None:
            self._highest = sequence
            return sequence
        candidate = (self._highest & ~0xFFFF) | sequence
        if candidate < self._highest - 0x8000:
            candidate += 0x10000
        elif candidate > self._highest + 0x8000:
            candidate -= 0x10000
        self._highest = max(self._highest, candidate)
        return candidate

    def recording(self) -> array:  # type: ignore[type-arg]
        """What was received, decoded, in sequence order."""
        return ulaw_decode(b"".join(self.received[n] for n in sorted(self.received)))

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.transport is not None:
            self.transport.close()

    def stats(self) -> dict[str, int]:
        return {"sent": self.sent, "received": len(self.received), "dropped": self.dropped}
