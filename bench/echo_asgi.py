"""A minimal ASGI app: a WebSocket echo on any path, and `200 Hello, World!` over HTTP.

What bench/websocket.py serves with Gunicorn's ASGI worker
(`gunicorn -k asgi bench.echo_asgi:app`) to compare with host's
`libchat.so:app` `/echo`: each WebSocket message comes back as it came
(text or binary). The HTTP answer is what the script waits for to know the
server is up. Plain ASGI 3, no framework: the least an ASGI server runs.
"""


async def app(scope, receive, send):
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            event = await receive()
            if event["type"] == "websocket.receive":
                if event.get("text") is not None:
                    await send({"type": "websocket.send", "text": event["text"]})
                else:
                    await send({"type": "websocket.send", "bytes": event.get("bytes") or b""})
            elif event["type"] == "websocket.disconnect":
                return
    elif scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")]})
        await send({"type": "http.response.body", "body": b"Hello, World!"})
    elif scope["type"] == "lifespan":
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
