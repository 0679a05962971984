"""Start the real vantage6 server (run with the rig's server venv, not the project's).

Usage: python server_launcher.py CONFIG_YAML HOST PORT [--access-log]

``--access-log`` writes one line per request (client address, request line, status,
seconds) to stderr, as gevent's WSGI server does when told to; the benchmarks count
REST calls with it.
"""
import enum
import sys


def _format_mixed_enum_by_value() -> None:
    # vantage6-server 4.x targets Python 3.10, where format() of a (str, Enum) member
    # gives its value; 3.11 changed that and breaks the server's permission names.
    # Must run before vantage6 creates its enum classes.
    plain_format = enum.Enum.__format__

    def __format__(self, spec):  # noqa: N807 - restores a dunder
        if type(self)._member_type_ is not object:
            return format(self.value, spec)
        return plain_format(self, spec)

    enum.Enum.__format__ = __format__


def _answer_without_nagle_stalls() -> None:
    # The development server writes a response's headers and body in separate sends. On
    # a kept-alive connection Nagle's algorithm then holds the body until the client ACKs
    # the headers, and the client delays that ACK by 40 ms: every request after the first
    # takes >= 40 ms. Production servers (uwsgi, behind nginx) buffer responses; turning
    # Nagle off here makes the rig behave like them. The server code itself is untouched.
    import socket  # noqa: PLC0415

    from gevent import pywsgi  # noqa: PLC0415

    handle = pywsgi.WSGIServer.handle

    def handle_without_nagle(self, sock, address):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        return handle(self, sock, address)

    pywsgi.WSGIServer.handle = handle_without_nagle


def main() -> None:
    config, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    access_log = sys.argv[4:] == ["--access-log"]
    if sys.version_info >= (3, 11):
        _format_mixed_enum_by_value()
    from vantage6.server import run_dev_server, run_server  # noqa: PLC0415 - after the shim

    _answer_without_nagle_stalls()
    app = run_server(config, system_folders=False)
    run_dev_server(app, host=host, port=port, log_output=access_log)


if __name__ == "__main__":
    main()
