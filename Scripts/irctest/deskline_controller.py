"""irctest controller for Deskline's IRC dialect (docs/IRC.md).

Used by Scripts/irctest/run as `pytest --controller deskline_controller` from an irctest
checkout (github.com/progval/irctest), with this directory on PYTHONPATH. Each test gets a fresh
server: a temporary data directory with one tenant, `irctest`, and a config with free ports.

Deskline has no anonymous users and no services, so two things are adapted on the client side
(irctest's ClientMock.sendLine is wrapped when this module is imported; nothing of irctest is
edited). Everything else goes to the server byte for byte.

1. Accounts. A nick a test registers with (`NICK foo`) is an agent account created on the fly
   with `deskline user add`: email `foo@irctest.example`, display name `foo` (so the server
   chooses the nick `foo` too), password DEFAULT_PASSWORD. `registerUser(case, name, pw)` does
   the same with the test's password. Before registration completes the client logs in with
   `PASS foo@irctest.example:<password>`: sent just before the first NICK, or, when the client
   opened CAP negotiation, just before `CAP END`; never when the client sent a SASL response
   (it logs in itself). In a test with a server password (irctest `password = ...`) nothing is
   injected: the client's own `PASS <server password>` is held until its NICK is known and
   sent as `PASS <email>:<account password>` (any other PASS text as `PASS <email>:<text>`,
   which is wrong).

2. SASL PLAIN identities. Deskline logins are emails and passwords are 8-256 bytes, while
   irctest hardcodes `jilles`/`sesame`. A complete PLAIN response naming an account that
   `registerUser` created is re-encoded with the emails (authzid and authcid) and the stored
   password (a password shorter than 8 bytes gets PASSWORD_PAD appended, in registerUser and
   here alike), then sent in 400-byte chunks (`+` after an exact multiple). Responses that are
   not valid PLAIN (bad base64, NUL in the password, an empty authcid, unknown names, more than
   1,600 bytes) go through unchanged. The server's 900 names the account `irctest/<email>`.
"""

import base64
import json
import os
from pathlib import Path
import re
import shutil
import subprocess
import threading
from typing import Dict, Optional, Set, Tuple, Type

from irctest import client_mock
from irctest.basecontrollers import BaseServerController, DirectoryBasedController
from irctest.specifications import Capabilities, OptionalBehaviors

TENANT = "irctest"
EMAIL_DOMAIN = "irctest.example"
DEFAULT_PASSWORD = "irctest-password"
PASSWORD_PAD = "~irctest"
SASL_CHUNK = 400
SASL_MAX = 1600

# The controller of the test that is running (irctest runs one test at a time per process).
_current: Optional["DesklineController"] = None


def binary() -> str:
    path = os.environ.get("DESKLINE_BINARY")
    if not path:
        raise RuntimeError("set DESKLINE_BINARY to the deskline executable")
    return path


def email_for(name: str) -> str:
    """The login of the account for nick/username `name`."""
    if not name or any(c in name for c in " /@:") or not name.isprintable():
        name = "x" + name.encode("utf-8", "surrogateescape").hex()
    return f"{name.lower()}@{EMAIL_DOMAIN}"


def map_password(password: str) -> str:
    """A password Deskline accepts for `password` (empty stays empty: it must fail)."""
    if password == "" or 8 <= len(password.encode()) <= 256:
        return password
    return password + PASSWORD_PAD


class DesklineController(BaseServerController, DirectoryBasedController):
    software_name = "Deskline"
    supported_sasl_mechanisms = {"PLAIN"}
    supports_sts = False
    _port_wait_interval = 0.05

    capabilities = frozenset(
        (
            Capabilities.BATCH,
            Capabilities.ECHO_MESSAGE,
            Capabilities.LABELED_RESPONSE,
            Capabilities.MESSAGE_TAGS,
            Capabilities.SERVER_TIME,
        )
    )
    optional_behaviors = frozenset((OptionalBehaviors.CAP_REQ_MINUS,))

    # docs/IRC.md, "ISUPPORT"
    isupport = {
        "CASEMAPPING": "ascii",
        "CHANTYPES": "#",
        "PREFIX": "(o)@",
        "STATUSMSG": "@",
        "UTF8ONLY": None,
        "CHATHISTORY": "100",
        "MSGREFTYPES": "msgid,timestamp",
        "NICKLEN": "30",
        "CHANNELLEN": "16",
    }

    def __init__(self, *args, **kwargs):  # type: ignore
        super().__init__(*args, **kwargs)
        self.server_password: Optional[str] = None
        self.accounts: Dict[str, str] = {}  # email -> password as stored
        self.registered: Set[str] = set()  # lower-cased names given to registerUser
        self.lock = threading.Lock()
        self.log_path: Optional[Path] = None

    # -- the server ------------------------------------------------------------------------

    def cli(self, *args: str, stdin: Optional[str] = None) -> subprocess.CompletedProcess:
        assert self.directory
        return subprocess.run(
            [binary(), *args, "--config", str(self.directory / "config.json")],
            input=stdin,
            capture_output=True,
            text=True,
        )

    def run(
        self,
        hostname: str,
        port: int,
        *,
        password: Optional[str],
        ssl: bool,
        run_services: bool,
        faketime: Optional[str],
        websocket_hostname: Optional[str] = None,
        websocket_port: Optional[int] = None,
    ) -> None:
        global _current
        from irctest.runner import NotImplementedByController

        if ssl:
            raise NotImplementedByController("TLS")  # not configured by this controller
        if websocket_hostname is not None or websocket_port is not None:
            raise NotImplementedByController("Websocket")
        # faketime is ignored (faketime_enabled stays False), as most controllers do
        assert self.proc is None
        self.create_config()
        assert self.directory
        self.port = port
        self.hostname = hostname
        self.server_password = password
        (_, native_port) = self.get_hostname_and_port()
        (_, tls_port) = self.get_hostname_and_port()
        config = {
            "listen": {"host": "127.0.0.1", "port": native_port},
            "irc": {"enabled": True, "host": hostname, "port": port, "tlsPort": tls_port},
            "dataDirectory": str(self.directory / "data"),
            "logLevel": "info",
            "hugePages": False,
            "passwordHashing": {"scryptN": 1024},
            "limits": {
                "floodBurst": 100000,
                "floodCommandsPerSecond": 100000,
                "maxConnectionsPerAddress": 1000,
                "maxNewConnectionsPerAddressPerMinute": 100000,
                "loginFailuresPerAddress": 1000000,
                "loginFailuresPerAccount": 1000000,
                "loginFailureDelayMilliseconds": 0,
            },
        }
        (self.directory / "config.json").write_text(json.dumps(config))
        r = self.cli("tenant", "add", TENANT, "--name", "irctest")
        if r.returncode != 0:
            raise RuntimeError(f"deskline tenant add: {r.stderr}")
        self.log_path = self.directory / "server.log"
        log = open(self.log_path, "w")
        self.proc = self.execute(
            [binary(), "serve", "--config", str(self.directory / "config.json")],
            proc_name="deskline",
            stdout=log,
            stderr=log,
        )
        _current = self

    def kill_proc(self) -> None:
        global _current
        if _current is self:
            _current = None
        super().kill_proc()

    def kill(self) -> None:
        keep = os.environ.get("DESKLINE_IRCTEST_KEEP")
        if keep and self.directory:
            shutil.copytree(self.directory, Path(keep) / self.directory.name, dirs_exist_ok=True)
        super().kill()

    def wait_for_services(self) -> None:
        pass  # no services: accounts are made with the CLI

    # -- accounts -------------------------------------------------------------------------

    def ensure_account(self, name: str, password: Optional[str] = None) -> Tuple[str, str]:
        """The login and password of the account for `name`, created when missing."""
        email = email_for(name)
        with self.lock:
            if email in self.accounts:
                if password is not None and self.accounts[email] != map_password(password):
                    stored = map_password(password)
                    r = self.cli("passwd", "--tenant", TENANT, "--email", email, stdin=stored + "\n")
                    if r.returncode != 0:
                        raise RuntimeError(f"deskline passwd {email}: {r.stderr}")
                    self.accounts[email] = stored
                return (email, self.accounts[email])
            stored = map_password(password) if password is not None else DEFAULT_PASSWORD
            display = name if name.strip() else email
            r = self.cli(
                "user", "add", "--tenant", TENANT, "--email", email,
                "--role", "agent", "--name", display[:100],
                stdin=stored + "\n",
            )
            if r.returncode != 0:
                raise RuntimeError(f"deskline user add {email}: {r.stderr}")
            self.accounts[email] = stored
            return (email, stored)

    def registerUser(self, case, username: str, password: Optional[str] = None) -> None:  # type: ignore
        from irctest.runner import NotImplementedByController

        if password is not None and len(password.encode()) > 256:
            # Deskline refuses such a password (8-256 bytes); mapping it would defeat the test
            raise NotImplementedByController("an account with a password over 256 bytes")
        self.ensure_account(username, password if password is not None else DEFAULT_PASSWORD)
        self.registered.add(username.lower())

    # -- SASL PLAIN identities -------------------------------------------------------------

    def map_plain(self, blob: str) -> Optional[bytes]:
        """The PLAIN response `blob` (base64) for Deskline, or None to send it unchanged."""
        try:
            raw = base64.b64decode(blob, validate=True)
            parts = [p.decode() for p in raw.split(b"\x00")]
        except Exception:
            return None
        if len(parts) != 3:
            return None
        (authzid, authcid, password) = parts
        if authcid.lower() not in self.registered:
            return None
        (email, _) = self.ensure_account(authcid)
        if authzid:
            authzid = email_for(authzid) if authzid.lower() in self.registered else authzid
        return b"\x00".join([authzid.encode(), email.encode(), map_password(password).encode()])


def get_irctest_controller_class() -> Type[DesklineController]:
    return DesklineController


# -- the client side: logins and SASL mapping on irctest's ClientMock -------------------------

_original_send = client_mock.ClientMock.sendLine
_COMMAND = re.compile(r"^(?:@\S+ )?(?::\S+ )?(\S+)(?: (.*))?$", re.S)


class _State:
    def __init__(self) -> None:
        self.nick: Optional[str] = None
        self.cap_open = False  # CAP LS/REQ sent, no CAP END yet
        self.logged_in = False  # PASS sent (or held), or a SASL response sent
        self.held_pass: Optional[str] = None  # a PASS line waiting for NICK
        self.sasl_plain = False  # `AUTHENTICATE PLAIN` sent, response not complete
        self.sasl_other = False  # another mechanism selected
        self.sasl_chunks: list = []
        self.done = False  # a NICK went out with a login: registration is up to the server


def _send(mock: client_mock.ClientMock, line: str) -> None:
    _original_send(mock, line)


def _pass_line(ctl: DesklineController, nick: str, given: Optional[str]) -> str:
    (email, password) = ctl.ensure_account(nick)
    if given is None or (ctl.server_password is not None and given == ctl.server_password):
        return f"PASS {email}:{password}"
    return f"PASS {email}:{given}"


def _wrapped_send(self: client_mock.ClientMock, line) -> None:  # type: ignore
    ctl = _current
    if ctl is None or isinstance(line, bytes):
        return _original_send(self, line)
    st: _State = self.__dict__.setdefault("_deskline", _State())
    text = line[:-2] if line.endswith("\r\n") else line
    m = _COMMAND.match(text)
    if not m:
        return _original_send(self, line)
    command = m.group(1).upper()
    args = m.group(2) or ""
    first = args.split(" ", 1)[0].lstrip(":") if args else ""

    if command == "CAP":
        sub = first.upper()
        if sub in ("LS", "REQ") and not st.done:
            st.cap_open = True
        if sub == "END" and st.cap_open:
            st.cap_open = False
            if st.nick is not None and not st.logged_in and ctl.server_password is None:
                st.logged_in = True
                _send(self, _pass_line(ctl, st.nick, None))
        return _original_send(self, line)

    if command == "PASS" and ctl.server_password is not None and not st.done:
        given = args[1:] if args.startswith(":") else args
        st.logged_in = True
        if st.nick is None:
            st.held_pass = given
            if self.show_io:
                print(f"(deskline harness: holding PASS until NICK for client {self.name})")
            return None
        return _send(self, _pass_line(ctl, st.nick, given))

    if command == "NICK" and st.nick is None and first:
        st.nick = first
        if st.held_pass is not None:
            _send(self, _pass_line(ctl, first, st.held_pass))
            st.held_pass = None
        elif not st.logged_in and not st.cap_open and ctl.server_password is None:
            st.logged_in = True
            _send(self, _pass_line(ctl, first, None))
        if not st.cap_open:
            st.done = True
        return _original_send(self, line)

    if command == "AUTHENTICATE":
        return _authenticate(self, st, ctl, line, first)

    return _original_send(self, line)


def _authenticate(self, st: _State, ctl: DesklineController, line: str, arg: str) -> None:  # type: ignore
    if not st.sasl_plain:
        if st.sasl_other:
            st.logged_in = True  # a response to another mechanism
            st.sasl_other = False
        elif arg.upper() == "PLAIN":
            st.sasl_plain = True
            st.sasl_chunks = []
        elif arg != "*" and arg != "":
            st.sasl_other = True
        return _original_send(self, line)
    # a response (chunk) to PLAIN
    if arg == "*":
        for chunk in st.sasl_chunks:
            _send(self, f"AUTHENTICATE {chunk}")
        st.sasl_plain = False
        st.sasl_chunks = []
        return _original_send(self, line)
    st.logged_in = True
    if len(arg) == SASL_CHUNK:
        st.sasl_chunks.append(arg)
        if sum(len(c) for c in st.sasl_chunks) <= SASL_MAX:
            return None  # hold it: the server answers nothing to a full chunk anyway
        for chunk in st.sasl_chunks:  # too long to be ours: pass everything through
            _send(self, f"AUTHENTICATE {chunk}")
        st.sasl_chunks = []
        st.sasl_plain = False
        return None
    held = st.sasl_chunks
    st.sasl_chunks = []
    st.sasl_plain = False
    blob = "".join(held) + ("" if arg == "+" else arg)
    mapped = ctl.map_plain(blob)
    if mapped is None:
        for chunk in held:
            _send(self, f"AUTHENTICATE {chunk}")
        return _original_send(self, line)
    encoded = base64.b64encode(mapped).decode()
    if self.show_io:
        print(f"(deskline harness: SASL PLAIN {base64.b64decode(blob)!r} sent as {mapped!r})")
    chunks = [encoded[i : i + SASL_CHUNK] for i in range(0, len(encoded), SASL_CHUNK)] or ["+"]
    if len(chunks[-1]) == SASL_CHUNK:
        chunks.append("+")
    for chunk in chunks:
        _send(self, f"AUTHENTICATE {chunk}")
    return None


client_mock.ClientMock.sendLine = _wrapped_send  # type: ignore
