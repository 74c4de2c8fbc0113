"""The deploy's SSH connections ask for AES-GCM first and still reach a server without it: a
paramiko server in this process, over a socket pair."""

from __future__ import annotations

import socket
import threading

import paramiko
import pytest

from gpurig.ssh import AEAD_CIPHERS, aead_first


def negotiated(server_ciphers: tuple[str, ...] | None) -> str:
    """The cipher a client from `aead_first` gets from a server offering `server_ciphers`
    (None: paramiko's own list)."""
    near, far = socket.socketpair()
    server = paramiko.Transport(far)
    server.add_server_key(paramiko.ECDSAKey.generate())
    if server_ciphers is not None:
        server.get_security_options().ciphers = server_ciphers
    started = threading.Event()
    threading.Thread(
        target=lambda: (server.start_server(server=paramiko.ServerInterface()), started.set()),
        daemon=True,
    ).start()
    client = aead_first(near)
    try:
        client.start_client(timeout=10)
        started.wait(10)
        assert client.remote_cipher == client.local_cipher
        return str(client.remote_cipher)
    finally:
        client.close()
        server.close()


def test_gcm_comes_first_and_nothing_paramiko_offers_is_dropped() -> None:
    near, far = socket.socketpair()
    try:
        default = paramiko.Transport(near).get_security_options().ciphers
        ours = aead_first(far).get_security_options().ciphers
    finally:
        near.close()
        far.close()
    assert ours[: len(AEAD_CIPHERS)] == AEAD_CIPHERS
    assert sorted(ours) == sorted(default)


@pytest.mark.parametrize(
    ("offered", "expected"),
    [(None, "aes128-gcm@openssh.com"), (("aes256-ctr", "aes128-ctr"), "aes128-ctr")],
)
def test_a_server_gets_gcm_when_it_offers_it_and_ctr_when_not(
    offered: tuple[str, ...] | None, expected: str
) -> None:
    assert negotiated(offered) == expected
