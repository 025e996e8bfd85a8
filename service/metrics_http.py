"""The Prometheus endpoint: ``/metrics`` over HTTP, or HTTPS with its own certificate, and a
bearer token of its own when asked. It listens on its own host (loopback by default), not
on the gRPC ``--host``: model names are in its labels."""
from __future__ import annotations

import hmac
import socket
import ssl
import threading
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # one line per scrape would drown the server's log
        pass


def _bearer(app, token: str):
    expected = f"Bearer {token}".encode()

    def guarded(environ, start_response):
        given = environ.get("HTTP_AUTHORIZATION", "").encode("latin-1", "replace")
        if hmac.compare_digest(given, expected):
            return app(environ, start_response)
        start_response("401 Unauthorized", [("Content-Type", "text/plain; charset=utf-8"),
                                             ("WWW-Authenticate", 'Bearer realm="rnnstream metrics"')])
        return [b"missing or wrong 'Authorization: Bearer' token\n"]
    return guarded


def serve(registry, host: str, port: int, *, token: str = "", certfile: str = "", keyfile: str = ""):
    """Start the endpoint in a daemon thread; returns the server (``server_port``, ``shutdown()``).
    Raises OSError when the port cannot be bound, ssl.SSLError for an unusable key pair."""
    app = make_wsgi_app(registry)
    if token:
        app = _bearer(app, token)

    class Server(ThreadingWSGIServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    context = None
    if certfile:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(certfile, keyfile)
    httpd = make_server(host.strip("[]"), port, app, Server, handler_class=_QuietHandler)
    if context is not None:
        # the handshake happens on the request's own thread (first read), not in the accept
        # loop, where one silent client would hold up every scrape
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
    threading.Thread(target=httpd.serve_forever, name="rnnstream-metrics", daemon=True).start()
    return httpd
