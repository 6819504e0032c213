"""The test broker itself: a port taken between choosing it and binding it must not make a
test talk to the wrong server or fail."""

import socket

import pytest
from broker import Broker

pytestmark = pytest.mark.integration


def test_a_taken_port_moves_the_first_start_and_restart_keeps_the_port(tmp_path):
    b = Broker(tmp_path)
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", b.port))        # what another test's process could do meanwhile
    squatter.listen(1)
    taken = b.port
    try:
        b.start()
        assert b.port != taken and str(b.port) in b.url
        assert f"listener {b.port} " in b.conf.read_text()
        b.restart()                             # the same port after a kill
        with socket.create_connection(("127.0.0.1", b.port), timeout=2):
            pass
    finally:
        squatter.close()
        b.stop()
