# WebSocket clients for the integration tests (tests/integration/websocket.rs),
# driven over stdin/stdout: one JSON command a line in, one JSON answer a line
# out. Commands: open, open_many, send, recv, close, abort (see `run`).
import asyncio, base64, json, ssl, sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

conns = {}


def closed(ws):
    return {"closed": ws.close_code, "reason": ws.close_reason or ""}


async def run(cmd):
    op, cid = cmd["op"], cmd.get("id")
    timeout = cmd.get("timeout", 30)
    if op == "open":
        ctx = None
        if cmd.get("ca"):
            ctx = ssl.create_default_context(cafile=cmd["ca"])
        try:
            ws = await asyncio.wait_for(
                connect(
                    cmd["url"],
                    subprotocols=cmd.get("protocols"),
                    ssl=ctx,
                    server_hostname=cmd.get("server_name"),
                    max_size=None,
                    ping_interval=None,
                    open_timeout=timeout,
                    close_timeout=timeout,
                ),
                timeout,
            )
        except InvalidStatus as e:
            return {"status": e.response.status_code}
        conns[cid] = ws
        return {"ok": True, "subprotocol": ws.subprotocol}
    if op == "open_many":
        # All at once: the handshakes arrive together.
        async def one(cid):
            ws = await connect(cmd["url"], max_size=None, ping_interval=None,
                               open_timeout=timeout, close_timeout=timeout)
            conns[cid] = ws
        await asyncio.wait_for(asyncio.gather(*(one(c) for c in cmd["ids"])), timeout)
        return {"ok": True}
    ws = conns[cid]
    if op == "send":
        data = cmd["text"] if "text" in cmd else base64.b64decode(cmd["binary"])
        try:
            await asyncio.wait_for(ws.send(data), timeout)
        except ConnectionClosed:
            return closed(ws)
        return {"ok": True}
    if op == "recv":
        try:
            msg = await asyncio.wait_for(ws.recv(), timeout)
        except ConnectionClosed:
            return closed(ws)
        except asyncio.TimeoutError:
            return {"timeout": True}
        if isinstance(msg, str):
            return {"text": msg}
        return {"binary": base64.b64encode(msg).decode()}
    if op == "close":
        await asyncio.wait_for(ws.close(cmd.get("code", 1000), cmd.get("reason", "")), timeout)
        return {"ok": True, "code": ws.close_code}
    if op == "abort":
        ws.transport.abort()
        return {"ok": True}
    return {"error": f"unknown op {op}"}


async def main():
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        try:
            answer = await run(json.loads(line))
        except Exception as e:  # the test reads it and fails saying so
            answer = {"error": repr(e)}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


asyncio.run(main())
