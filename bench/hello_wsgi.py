"""The hello app for Gunicorn, as the benchmark compares it: the same body and
content type as `example-apps/hello` and nginx's `return 200` in bench/run.py."""

BODY = b"Hello, World!"


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))])
    return [BODY]
