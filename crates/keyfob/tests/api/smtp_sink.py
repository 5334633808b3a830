"""A real SMTP server for the tests: aiosmtpd (Debian's python3-aiosmtpd, or from PyPI) keeping
every message it accepts in a Maildir.

    python3 smtp_sink.py PORT MAILDIR [USER PASSWORD]

With USER and PASSWORD, AUTH (PLAIN or LOGIN) is required before a message is taken. With
SINK_TLS_CERT and SINK_TLS_KEY in the environment it offers STARTTLS and takes no message before
it. Prints `ready` once it listens; stops when its standard input closes.
"""

import os
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult, LoginPassword


def main():
    port = int(sys.argv[1])
    maildir = sys.argv[2]
    credentials = None
    if len(sys.argv) == 5:
        credentials = (sys.argv[3].encode(), sys.argv[4].encode())

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and (auth_data.login, auth_data.password) == credentials
        )
        return AuthResult(success=ok)

    options = {}
    if credentials:
        options = dict(
            authenticator=authenticate, auth_required=True, auth_require_tls=False
        )
    cert, key = os.environ.get("SINK_TLS_CERT"), os.environ.get("SINK_TLS_KEY")
    if cert and key:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        options.update(tls_context=context, require_starttls=True)
    controller = Controller(
        Mailbox(maildir), hostname="127.0.0.1", port=port, **options
    )
    controller.start()
    print("ready", flush=True)
    try:
        sys.stdin.read()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
