#!/usr/bin/python3
"""A real SMTP server for airlock's tests: Debian's python3-aiosmtpd on 127.0.0.1.

Each message received is written to DIR as one JSON file (NNNNNN.json, written under another
name and renamed, so a reader never sees half of one): the envelope sender and recipients, the
raw message, the user name it authenticated as (or null), and whether the session was under
TLS. Every AUTH attempt is appended to DIR/auth.log as `MECHANISM LOGIN ok|refused`.

    smtp_receiver.py --port P --dir DIR [--user U --password PW]
                     [--tls none|starttls|tls --cert CERT.pem --key KEY.pem]

With --user, AUTH is required before MAIL (over plain text too with --tls none). With
--tls starttls the server requires STARTTLS before anything else; with --tls tls it speaks
TLS from the first byte. Prints "ready" on stdout once it accepts connections.
"""

import argparse
import itertools
import json
import os
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

args = argparse.ArgumentParser()
args.add_argument("--port", type=int, required=True)
args.add_argument("--dir", required=True)
args.add_argument("--user")
args.add_argument("--password")
args.add_argument("--tls", choices=["none", "starttls", "tls"], default="none")
args.add_argument("--cert")
args.add_argument("--key")
a = args.parse_args()

counter = itertools.count()


class Handler:
    async def handle_DATA(self, server, session, envelope):
        n = next(counter)
        auth = session.auth_data
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "data": envelope.content.decode("utf-8", "replace"),
            "login": auth.login.decode() if isinstance(auth, LoginPassword) else None,
            # After STARTTLS aiosmtpd sets session.ssl; under implicit TLS only the
            # transport knows.
            "tls": session.ssl is not None
            or server.transport.get_extra_info("ssl_object") is not None,
        }
        tmp = os.path.join(a.dir, f".{n:06}.tmp")
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.rename(tmp, os.path.join(a.dir, f"{n:06}.json"))
        return "250 OK"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and a.user is not None
        and auth_data.login == a.user.encode()
        and auth_data.password == a.password.encode()
    )
    login = auth_data.login.decode() if isinstance(auth_data, LoginPassword) else "?"
    with open(os.path.join(a.dir, "auth.log"), "a") as f:
        f.write(f"{mechanism} {login} {'ok' if ok else 'refused'}\n")
    # Returned as session.auth_data, so each message records who sent it.
    return AuthResult(success=ok, auth_data=auth_data if ok else None)


kwargs = {}
if a.user:
    kwargs.update(authenticator=authenticator, auth_required=True)
if a.tls != "none":
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(a.cert, a.key)
if a.tls == "starttls":
    kwargs.update(tls_context=ctx, require_starttls=True, auth_require_tls=True)
elif a.tls == "tls":
    # Every byte is under TLS here; aiosmtpd's own check knows only STARTTLS.
    kwargs.update(ssl_context=ctx, auth_require_tls=False)
else:
    kwargs.update(auth_require_tls=False)

controller = Controller(Handler(), hostname="127.0.0.1", port=a.port, **kwargs)
controller.start()
print("ready", flush=True)
try:
    # Until killed, or until the test's end of stdin closes.
    sys.stdin.read()
finally:
    controller.stop()
