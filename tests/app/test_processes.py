"""Helpers for running real processes: free ports."""

from __future__ import annotations

import socket

from supplyflow.app.processes import free_port


def test_free_port_span_leaves_the_following_ports_free_too() -> None:
    port = free_port(span=2)
    for candidate in (port, port + 1):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", candidate))  # raises if something holds it
