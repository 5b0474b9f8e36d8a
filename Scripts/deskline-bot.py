#!/usr/bin/env python3
"""An example Deskline bot (Python 3 standard library only).

It logs in as an agent, waits for pushed events, and when a customer writes in a ticket that
nobody is assigned to, assigns it to itself and posts a greeting. Every command carries a
@label so its reply is told apart from events that arrive in between.

Usage:
  DESKLINE_PASSWORD=... Scripts/deskline-bot.py --email bot@acme.example [--host 127.0.0.1] [--port 6667]
         [--greeting TEXT] [--max-tickets N] [--idle-exit SECONDS]

The password comes from the environment (never argv). With --max-tickets the bot exits after
greeting that many tickets; with --idle-exit after that many seconds without events.
"""
import argparse
import itertools
import os
import socket
import sys


def unescape(word):
    """Undo the IRCv3 tag-value escaping the server uses for words (`Amy\\sAgent`)."""
    out, chars = [], iter(word)
    for c in chars:
        if c != "\\":
            out.append(c)
            continue
        nxt = next(chars, None)
        if nxt is None:
            break
        out.append({":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}.get(nxt, nxt))
    return "".join(out)


def parse(line):
    """Split a server line into (label, kind, name, words, text)."""
    label = None
    if line.startswith("@"):
        tags, _, line = line.partition(" ")
        for tag in tags[1:].split(";"):
            key, _, value = tag.partition("=")
            if key == "label":
                label = unescape(value)
    head, sep, text = line.partition(" :")
    words = head.split(" ")
    return label, words[0], words[1] if len(words) > 1 else "", words[2:], text if sep else None


class Client:
    def __init__(self, host, port, timeout):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.file = self.sock.makefile("r", encoding="utf-8", newline="\r\n")
        self.labels = (f"bot{n}" for n in itertools.count(1))
        self.pending_events = []

    def read_line(self):
        line = self.file.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        return line.rstrip("\r\n")

    def command(self, text):
        """Send a labelled command; return its reply lines. Events seen meanwhile are queued."""
        label = next(self.labels)
        self.sock.sendall(f"@label={label} {text}\r\n".encode())
        reply = []
        while True:
            line = self.read_line()
            got_label, kind, *_ = parse(line)
            if got_label != label:
                if kind == "EVENT":
                    self.pending_events.append(line)
                continue
            reply.append(line)
            if kind in ("OK", "ERR"):
                return reply

    def next_event(self):
        if self.pending_events:
            return self.pending_events.pop(0)
        while True:
            line = self.read_line()
            if parse(line)[1] == "EVENT":
                return line


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=6667)
    ap.add_argument("--email", required=True)
    ap.add_argument("--greeting", default="Hello! I have picked up your ticket and will get back to you shortly.")
    ap.add_argument("--max-tickets", type=int, default=0)
    ap.add_argument("--idle-exit", type=float, default=0)
    args = ap.parse_args()
    password = os.environ.get("DESKLINE_PASSWORD")
    if not password:
        sys.exit("set DESKLINE_PASSWORD")

    client = Client(args.host, args.port, args.idle_exit or None)
    client.read_line()  # EVENT HELLO
    reply = client.command(f"LOGIN {args.email} :{password}")
    _, kind, _, words, text = parse(reply[-1])
    if kind != "OK":
        sys.exit(f"login failed: {reply[-1]}")
    print(f"logged in as {words[0]} of {words[1]}: {text}", flush=True)

    greeted = 0
    while not args.max_tickets or greeted < args.max_tickets:
        try:
            line = client.next_event()
        except (socket.timeout, TimeoutError):
            print("idle, exiting", flush=True)
            break
        _, _, name, words, text = parse(line)
        # EVENT TICKET #<n> <msgid> <time> <kind> <role> <author> :<text>
        if name != "TICKET" or len(words) < 6 or words[3] != "message" or words[4] != "customer":
            continue
        ticket = words[0]
        show = client.command(f"SHOW {ticket}")
        assignee = next((parse(l)[4] for l in show if parse(l)[3][:2] == [ticket, "assignee"]), "")
        if assignee:
            continue
        assigned = client.command(f"ASSIGN {ticket} me")
        if parse(assigned[-1])[1] != "OK":
            print(f"{ticket}: could not assign: {assigned[-1]}", flush=True)
            continue
        greeting = client.command(f"MSG {ticket} {args.greeting}")
        print(f"{ticket}: assigned and greeted ({parse(greeting[-1])[1]}), customer wrote: {text}", flush=True)
        greeted += 1
    client.command("QUIT")


if __name__ == "__main__":
    main()
