"""Signaling controller: AP-REQ/AP-REP key management, ESP-protected signaling."""
