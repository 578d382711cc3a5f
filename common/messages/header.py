"""Checks shared by every RFC 4120 message decoder: protocol version 5 and the message type."""

from typing import Any

from common.errors import MalformedMessage

PVNO = 5


def verify_header(message: Any, msg_type: int | tuple[int, ...]) -> None:
    """Raise MalformedMessage unless pvno is 5 and msg-type is (one of) `msg_type`."""
    if message.pvno != PVNO:
        raise MalformedMessage("BAD_PVNO", f"pvno {message.pvno}")
    allowed = msg_type if isinstance(msg_type, tuple) else (msg_type,)
    if message.msg_type not in allowed:
        raise MalformedMessage("BAD_MSG_TYPE", f"msg-type {message.msg_type}")
