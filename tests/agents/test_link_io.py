"""Link sockets: GSO batching, GRO receipt, and a receive-only inner socket."""
import errno
import os
import socket

from ferry.agents.link_io import LinkReceiveSocket, LinkSendSocket, probe_gso, send_datagrams


def _pair(gso=True, gro=True):
    rx = LinkReceiveSocket(("127.0.0.1", 0), rcvbuf=8 << 20, gro=gro)
    tx = LinkSendSocket(rx.address, bind_host="127.0.0.1", gso=gso)
    return tx, rx


def _collect(rx, want):
    segs = []
    for _ in range(10000):
        got = rx.receive()
        if got is None:
            if sum(map(len, segs)) >= want:
                break
            continue
        buf, seg = got
        segs.extend(bytes(buf[i:i + seg]) for i in range(0, len(buf), seg))
    return segs


def test_inner_socket_cannot_send():
    rx = LinkReceiveSocket(("127.0.0.1", 0))
    try:
        assert rx.check_receive_only()
    finally:
        rx.close()


def test_batch_arrives_in_order_with_and_without_offload():
    for gso, gro in ((True, True), (False, False), (True, False)):
        tx, rx = _pair(gso, gro)
        try:
            dgrams = [os.urandom(1472) for _ in range(150)] + [os.urandom(100)]
            assert tx.send_batch(dgrams) == len(dgrams)
            got = _collect(rx, sum(map(len, dgrams)))
            assert got == dgrams, (gso, gro)
        finally:
            tx.close()
            rx.close()


def test_gro_coalesces_on_loopback():
    tx, rx = _pair()
    try:
        if not (tx.gso and rx.gro):
            return        # kernel without UDP GSO/GRO: the fallback is covered above
        tx.send_batch([b"a" * 1000] * 10)
        got = None
        while got is None:
            got = rx.receive()
        buf, seg = got
        assert seg == 1000 and len(buf) == 10000
    finally:
        tx.close()
        rx.close()


def test_sender_ignores_a_receiver_that_was_not_listening_yet():
    """Datagrams sent before the inner socket exists must not make later sends fail
    (a connected UDP socket would report the ICMP error on the next send and drop it)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    addr = probe.getsockname()
    probe.close()                                   # nobody listens on addr now
    tx = LinkSendSocket(addr, bind_host="127.0.0.1")
    try:
        assert tx.send_batch([b"x" * 100] * 3) == 3     # ICMP port unreachable comes back
        rx = LinkReceiveSocket(addr)
        try:
            dgrams = [os.urandom(500) for _ in range(5)]
            assert tx.send_batch(dgrams) == 5
            assert _collect(rx, 2500) == dgrams
        finally:
            rx.close()
    finally:
        tx.close()


def test_send_datagrams_groups_equal_sizes_and_keeps_order():
    """Runs of one size (a shorter last one allowed) leave in one send; the receiver sees each datagram."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(2)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sizes = [1412] * 30 + [700] + [1412] * 3 + [200] + [64]
        dgrams = [os.urandom(n) for n in sizes]
        gso = probe_gso(tx)
        sent, still, calls = send_datagrams(tx, dgrams, rx.getsockname(), gso)
        assert sent == len(dgrams) and still == gso
        # with offload: [30 x 1412 + 700], [3 x 1412 + 200], [64]; without: one each
        assert calls == (3 if gso else len(dgrams))
        got = [rx.recv(65536) for _ in dgrams]
        assert got == dgrams
        sent, still, calls = send_datagrams(tx, dgrams, rx.getsockname(), False)
        assert calls == len(dgrams) and [rx.recv(65536) for _ in dgrams] == dgrams
    finally:
        rx.close()
        tx.close()


def test_send_datagrams_falls_back_for_good_when_the_device_refuses_offload():
    """EIO (a device without UDP segmentation) on the first offloaded send: the rest go one by one."""
    class NoOffload:
        def __init__(self):
            self.sent = []

        def sendmsg(self, buffers, ancillary, flags, address):
            raise OSError(errno.EIO, "no GSO here")

        def sendto(self, data, address):
            self.sent.append(bytes(data))

    sock = NoOffload()
    dgrams = [os.urandom(1000) for _ in range(10)] + [os.urandom(10)]
    sent, gso, calls = send_datagrams(sock, dgrams, ("127.0.0.1", 9), True)
    assert sent == len(dgrams) and gso is False
    assert sock.sent == dgrams and calls == len(dgrams) + 1      # the refused try, then one each
