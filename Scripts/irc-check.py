#!/usr/bin/env python3
"""Checks an IRC daemon started by Scripts/irc-daemons (issue #7), with plain IRC only.

fan-out (default): connects CHANNELS x (1 sender + WATCHERS) clients from 127.0.0.1, registers
them (NICK/USER, waits for 001), joins one channel per ticket (waits for 366), then every sender
writes MESSAGES PRIVMSGs as fast as the daemon takes them: in windows of --window messages, each
followed by a PING, with two windows in flight (the next goes when a PONG returns). Every
watcher must receive every message of its channel, in order. Prints connections, times, delivered messages/s, and with --pid the daemon's RSS and
CPU time. One Python thread drives all sockets: the CPU lines tell whether Python or the daemon
was the limit, and "daemon CPU per delivered message" what the daemon itself spent.

idle (--idle N): connects and registers N clients, holds them --hold seconds (answering PING)
and prints the daemon's RSS per client (VmRSS from /proc/PID/status, before vs after).

Exit status 0 when every client registered (and every message arrived), 1 otherwise.

  Scripts/irc-check.py --port 16667 --pid 1234
  Scripts/irc-check.py --port 16668 --pid 1235 --idle 10000
"""
import argparse
import errno
import os
import random
import resource
import selectors
import socket
import string
import sys
import time

SEND_CHUNK = 65536


def raise_nofile(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(needed, 1 << 20)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        want = soft
    if want < needed:
        sys.exit(f"irc-check: need {needed} file descriptors, the limit is {want}")


def proc_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def proc_cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat(5); fields[0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Client:
    __slots__ = ("sock", "nick", "role", "chan", "rbuf", "wbuf", "connected", "registered",
                 "joined", "got", "next_seq", "errors", "closed", "events")

    def __init__(self, nick, role, chan):
        self.sock = None
        self.nick = nick
        self.role = role          # "sender", "watcher" or "idle"
        self.chan = chan          # bytes or None
        self.rbuf = b""
        self.wbuf = bytearray()
        self.connected = False
        self.registered = False
        self.joined = False
        self.got = 0
        self.next_seq = 0
        self.errors = []
        self.closed = False
        self.events = 0


class Driver:
    def __init__(self, args):
        self.args = args
        self.sel = selectors.DefaultSelector()
        self.clients = []
        self.pending_connect = []
        self.inflight = 0
        self.registered = 0
        self.joined = 0
        self.delivered = 0
        self.failures = []
        self.last_delivery = 0.0
        self.pad = b""

    # --- sockets -------------------------------------------------------------------------
    def start_connect(self, c):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = s.connect_ex((self.args.host, self.args.port))
        if err not in (0, errno.EINPROGRESS):
            s.close()
            self.fail(c, f"connect: {os.strerror(err)}")
            return
        c.sock = s
        c.wbuf += b"NICK %s\r\nUSER %s 0 * :deskline irc-check\r\n" % (c.nick, c.nick[:9])
        self.inflight += 1
        self.update(c, new=True)

    def update(self, c, new=False):
        ev = selectors.EVENT_READ
        if c.wbuf or not c.connected:
            ev |= selectors.EVENT_WRITE
        if new:
            self.sel.register(c.sock, ev, c)
        elif ev != c.events:
            self.sel.modify(c.sock, ev, c)
        c.events = ev

    def send(self, c, data):
        if c.closed:
            return
        c.wbuf += data
        self.flush(c)

    def flush(self, c):
        if c.wbuf and c.connected:
            try:
                n = c.sock.send(c.wbuf[:SEND_CHUNK] if len(c.wbuf) > SEND_CHUNK else c.wbuf)
                del c.wbuf[:n]
            except BlockingIOError:
                pass
            except OSError as e:
                self.fail(c, f"send: {e}")
                return
        self.update(c)

    def fail(self, c, why):
        if c.closed:
            return
        c.closed = True
        c.errors.append(why)
        self.failures.append(f"{c.nick.decode()}: {why}")
        if not c.registered and c.sock is not None:
            self.inflight -= 1
        if c.sock is not None:
            try:
                self.sel.unregister(c.sock)
            except (KeyError, ValueError):
                pass
            c.sock.close()

    def close_all(self):
        for c in self.clients:
            if c.sock is not None and not c.closed:
                c.closed = True
                try:
                    self.sel.unregister(c.sock)
                except (KeyError, ValueError):
                    pass
                c.sock.close()

    # --- protocol ------------------------------------------------------------------------
    def send_window(self, c):
        """A sender writes the next --window messages and a PING; the PONG frees the window."""
        n = min(self.args.window, self.args.messages - c.next_seq)
        if n <= 0 or c.closed:
            return
        buf = bytearray()
        for seq in range(c.next_seq, c.next_seq + n):
            buf += b"PRIVMSG %s :%d %s\r\n" % (c.chan, seq, self.pad)
        c.next_seq += n
        buf += b"PING :w%d\r\n" % c.next_seq
        self.send(c, bytes(buf))

    def on_line(self, c, line):
        if c.role == "watcher" and b" PRIVMSG " in line:
            text = line[line.index(b" :", 1) + 2:]
            seq = int(text.split(b" ", 1)[0])
            if seq != c.next_seq:
                self.fail(c, f"message {seq} arrived, expected {c.next_seq}")
                return
            c.next_seq += 1
            c.got += 1
            self.delivered += 1
            self.last_delivery = time.monotonic()
            return
        if line.startswith(b":"):
            parts = line.split(b" ", 3)
            cmd = parts[1] if len(parts) > 1 else b""
        else:
            parts = line.split(b" ", 2)
            cmd = parts[0]
            if cmd == b"PING":
                self.send(c, b"PONG " + line[5:] + b"\r\n")
                return
            if cmd == b"ERROR":
                self.fail(c, line.decode(errors="replace"))
                return
        if cmd == b"PONG" and c.role == "sender":
            self.send_window(c)
        elif cmd == b"001":
            if not c.registered:
                c.registered = True
                self.registered += 1
                self.inflight -= 1
        elif cmd == b"366":
            if not c.joined:
                c.joined = True
                self.joined += 1
        elif cmd in (b"KILL", b"432", b"433", b"436", b"465", b"471", b"473", b"474", b"405"):
            self.fail(c, line.decode(errors="replace"))

    def on_event(self, c, mask):
        if c.closed:
            return
        if not c.connected and mask & selectors.EVENT_WRITE:
            err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.fail(c, f"connect: {os.strerror(err)}")
                return
            c.connected = True
        if mask & selectors.EVENT_READ:
            try:
                data = c.sock.recv(262144)
            except BlockingIOError:
                data = None
            except OSError as e:
                self.fail(c, f"recv: {e}")
                return
            if data == b"":
                self.fail(c, "connection closed by the server")
                return
            if data:
                buf = c.rbuf + data
                lines = buf.split(b"\n")
                c.rbuf = lines.pop()
                for line in lines:
                    if line.endswith(b"\r"):
                        line = line[:-1]
                    if line:
                        self.on_line(c, line)
                        if c.closed:
                            return
        self.flush(c)

    def pump(self, timeout):
        for key, mask in self.sel.select(timeout):
            self.on_event(key.data, mask)
        while self.pending_connect and self.inflight < self.args.parallel:
            self.start_connect(self.pending_connect.pop())

    def run_until(self, what, done, timeout):
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                if what:
                    print(f"irc-check: timed out after {timeout} s waiting for {what}",
                          file=sys.stderr)
                return False
            if self.failures and self.args.stop_on_failure:
                return False
            self.pump(0.2)
        return True

    # --- phases --------------------------------------------------------------------------
    def connect_all(self):
        self.pending_connect = list(reversed(self.clients))
        t0 = time.monotonic()
        ok = self.run_until("registration",
                            lambda: self.registered + len(self.failures) >= len(self.clients),
                            self.args.timeout)
        return ok and not self.failures, time.monotonic() - t0


def report_failures(d):
    if d.failures:
        print(f"FAILURES: {len(d.failures)} clients", file=sys.stderr)
        for f in d.failures[:10]:
            print("  " + f, file=sys.stderr)


def run_fanout(args, tag):
    d = Driver(args)
    for ch in range(args.channels):
        chan = b"#%s%03d" % (tag, ch)
        d.clients.append(Client(b"%ss%03d" % (tag, ch), "sender", chan))
        for w in range(args.watchers):
            d.clients.append(Client(b"%sw%03d_%02d" % (tag, ch, w), "watcher", chan))
    raise_nofile(len(d.clients) + 64)
    rss0 = proc_rss_kib(args.pid) if args.pid else None

    ok, t_reg = d.connect_all()
    print(f"connections: {d.registered}/{len(d.clients)} registered in {t_reg:.2f} s")
    if not ok:
        report_failures(d)
        return 1

    t0 = time.monotonic()
    for c in d.clients:
        d.send(c, b"JOIN %s\r\n" % c.chan)
    ok = d.run_until("JOIN", lambda: d.joined >= len(d.clients), args.timeout)
    print(f"joined: {d.joined}/{len(d.clients)} in {time.monotonic() - t0:.2f} s "
          f"({args.channels} channels, 1 sender + {args.watchers} watchers each)")
    if not ok or d.failures:
        report_failures(d)
        return 1

    senders = [c for c in d.clients if c.role == "sender"]
    watchers = [c for c in d.clients if c.role == "watcher"]
    expected = len(watchers) * args.messages
    pad = d.pad = b"x" * args.payload
    cpu0 = proc_cpu_seconds(args.pid) if args.pid else None
    me0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    for s in senders:
        s.next_seq = 0       # next message to write
        d.send_window(s)
        d.send_window(s)
    t_sent = None
    deadline = t0 + args.timeout
    next_progress = t0 + 1
    while d.delivered < expected and time.monotonic() < deadline:
        if d.failures and args.stop_on_failure:
            break
        d.pump(0.2)
        if args.progress and time.monotonic() >= next_progress:
            next_progress += 1
            print(f"  {time.monotonic() - t0:5.1f} s: {d.delivered} delivered", file=sys.stderr)
        if t_sent is None and all(s.next_seq == args.messages and not s.wbuf
                                  for s in senders):
            t_sent = time.monotonic() - t0
    elapsed = max((d.last_delivery or time.monotonic()) - t0, 1e-6)
    cpu1 = proc_cpu_seconds(args.pid) if args.pid else None
    me1 = resource.getrusage(resource.RUSAGE_SELF)
    rss1 = proc_rss_kib(args.pid) if args.pid else None

    sent = len(senders) * args.messages
    line_len = len(b"PRIVMSG %s :%d %s\r\n" % (senders[0].chan, args.messages - 1, pad))
    print(f"sent: {sent} PRIVMSGs ({len(senders)} senders x {args.messages}, "
          f"{line_len} bytes each), written in {t_sent or elapsed:.2f} s")
    print(f"delivered: {d.delivered}/{expected} in {elapsed:.2f} s = "
          f"{d.delivered / elapsed:,.0f} msgs/s")
    mine = (me1.ru_utime - me0.ru_utime) + (me1.ru_stime - me0.ru_stime)
    print(f"irc-check CPU: {mine:.2f} s (one Python thread; near the elapsed time means "
          f"Python was the limit)")
    incomplete = [w for w in watchers if w.got != args.messages]
    if args.pid:
        cpu = cpu1 - cpu0
        per = cpu / d.delivered * 1e6 if d.delivered else float("nan")
        cap = d.delivered / cpu if cpu > 0 else float("inf")
        print(f"daemon CPU: {cpu:.2f} s during the burst = {per:.2f} us per delivered message "
              f"(~{cap:,.0f} msgs/s per core if it were the only limit)")
        print(f"daemon RSS: {rss0} KiB before connecting, {rss1} KiB after the burst")
    d.close_all()
    if incomplete or d.failures:
        print(f"INCOMPLETE: {len(incomplete)} watchers missed messages", file=sys.stderr)
        report_failures(d)
        return 1
    print("ok: every watcher received every message, in order; no client was dropped")
    return 0


def run_idle(args, tag):
    d = Driver(args)
    for i in range(args.idle):
        d.clients.append(Client(b"%si%05d" % (tag, i), "idle", None))
    raise_nofile(len(d.clients) + 64)
    rss0 = proc_rss_kib(args.pid) if args.pid else None
    ok, t_reg = d.connect_all()
    print(f"connections: {d.registered}/{len(d.clients)} registered in {t_reg:.2f} s "
          f"({d.registered / max(t_reg, 1e-6):,.0f}/s, {args.parallel} registering at a time)")
    if not ok:
        report_failures(d)
    d.run_until(None, lambda: False, args.hold)
    alive = sum(1 for c in d.clients if c.registered and not c.closed)
    rss1 = proc_rss_kib(args.pid) if args.pid else None
    print(f"still connected after holding {args.hold:.0f} s: {alive}")
    if args.pid:
        per = (rss1 - rss0) * 1024 / max(alive, 1)
        print(f"daemon RSS: {rss0} KiB before, {rss1} KiB with {alive} idle clients = "
              f"{per:,.0f} bytes per client")
    d.close_all()
    report_failures(d)
    return 0 if ok and alive == len(d.clients) else 1


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pid", type=int, help="daemon pid, for RSS and CPU from /proc")
    p.add_argument("--channels", type=int, default=100)
    p.add_argument("--watchers", type=int, default=10)
    p.add_argument("--messages", type=int, default=200)
    p.add_argument("--payload", type=int, default=40, help="filler bytes per message")
    p.add_argument("--window", type=int, default=100,
                   help="messages a sender writes before a PING; two windows in flight")
    p.add_argument("--idle", type=int, default=0, help="open this many idle clients instead")
    p.add_argument("--hold", type=float, default=5, help="seconds to hold idle clients")
    p.add_argument("--parallel", type=int, default=500,
                   help="connections registering at once (InspIRCd completes a registration "
                        "only on its once-a-second tick, so this bounds registrations/s)")
    p.add_argument("--timeout", type=float, default=120, help="seconds per phase")
    p.add_argument("--progress", action="store_true", help="print deliveries every second")
    p.add_argument("--keep-going", dest="stop_on_failure", action="store_false")
    args = p.parse_args()
    tag = "".join(random.choice(string.ascii_lowercase) for _ in range(2)).encode()
    if args.idle:
        return run_idle(args, tag)
    return run_fanout(args, tag)


if __name__ == "__main__":
    sys.exit(main())
