"""The web listener's sockets: responses leave at once (no Nagle wait on keep-alive)."""

from __future__ import annotations

import asyncio
import socket

from mailgate.app import _listen


async def test_accepted_web_connections_have_tcp_nodelay() -> None:
    """asyncio sets TCP_NODELAY only on sockets whose protocol is IPPROTO_TCP: a listener
    made with proto 0 left it off, and every keep-alive response after the first waited
    40 ms for the client's delayed ACK (uvicorn writes headers and body separately)."""
    listener = _listen("127.0.0.1", 0)
    listener.listen()
    nodelay: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        nodelay.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(accepted, sock=listener)
    try:
        _, writer = await asyncio.open_connection(*listener.getsockname()[:2])
        assert await asyncio.wait_for(nodelay, 5) != 0
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
