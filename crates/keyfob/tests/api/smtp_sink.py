"""A real SMTP server for the tests: aiosmtpd (Debian's python3-aiosmtpd, or from PyPI) keeping
every message it accepts in a Maildir.

    python3 smtp_sink.py PORT MAILDIR [USER PASSWORD]

With USER and PASSWORD, AUTH (PLAIN or LOGIN) is required before a message is taken. Prints
`ready` once it listens; stops when its standard input closes.
"""

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
