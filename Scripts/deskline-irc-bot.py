#!/usr/bin/env python3
"""A Deskline bot on the IRC dialect, written with the PyPI `irc` library (pip install irc).

It registers with SASL PLAIN as an agent, and when the service user tells it that a customer
wrote in a ticket nobody has taken (or of a new ticket), it assigns the ticket to itself with a
raw command (`ASSIGN #n me`), joins the ticket's channel and greets the customer there. It shows
that an off-the-shelf IRC library is enough to drive Deskline (docs/IRC.md).

Usage:
  DESKLINE_PASSWORD=... Scripts/deskline-irc-bot.py --login bot@acme.example [--host 127.0.0.1]
         [--port 6668] [--greeting TEXT] [--max-tickets N] [--idle-exit SECONDS]

The password comes from the environment (never argv). With --max-tickets the bot exits after
greeting that many tickets; with --idle-exit after that many seconds without a line.
"""
import argparse
import os
import re
import sys
import time

import irc.client

SERVICE = "Deskline"
# "#1001 (subject): message from Ann Customer: text — /join #1001 to answer" and
# "New ticket #1001 from Ann Customer: subject — /join #1001".
TICKET_NEWS = re.compile(r"^(?:New ticket (#\d+) from |(#\d+) \(.*\): message from )")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6668)
    parser.add_argument("--login", required=True, help="email, or tenant/email")
    parser.add_argument("--greeting", default="Hello! A bot has taken your ticket; a person will follow up.")
    parser.add_argument("--max-tickets", type=int, default=0)
    parser.add_argument("--idle-exit", type=float, default=0)
    args = parser.parse_args()
    password = os.environ.get("DESKLINE_PASSWORD")
    if not password:
        sys.exit("set DESKLINE_PASSWORD")

    reactor = irc.client.Reactor()
    taken, greeted = set(), []
    last_line = [time.monotonic()]

    def on_any(connection, event):
        last_line[0] = time.monotonic()

    def on_welcome(connection, event):
        # The server chooses the nick: the library learns it from 001.
        print(f"registered as {connection.get_nickname()}", flush=True)

    def on_notice(connection, event):
        if event.source.nick != SERVICE:
            return
        text = event.arguments[0]
        match = TICKET_NEWS.match(text)
        if not match:
            return
        channel = match.group(1) or match.group(2)
        if channel in taken:
            return
        taken.add(channel)
        connection.send_raw(f"ASSIGN {channel} me")
        connection.join(channel)

    def on_join(connection, event):
        channel = event.target
        if event.source.nick != connection.get_nickname() or channel not in taken or channel in greeted:
            return
        connection.privmsg(channel, args.greeting)
        greeted.append(channel)
        print(f"{channel}: assigned and greeted", flush=True)

    def on_pubmsg(connection, event):
        if event.source.nick != connection.get_nickname():
            print(f"{event.target}: {event.source.nick} wrote: {event.arguments[0]}", flush=True)

    def on_error(connection, event):
        print(f"server closed the connection: {' '.join(event.arguments)}", file=sys.stderr, flush=True)

    connection = reactor.server()
    for kind, handler in [("all_events", on_any), ("welcome", on_welcome), ("privnotice", on_notice),
                          ("join", on_join), ("pubmsg", on_pubmsg), ("error", on_error)]:
        connection.add_global_handler(kind, handler, -10 if kind == "all_events" else 0)
    try:
        connection.connect(args.host, args.port, "deskbot", password=password, username="bot",
                           ircname="Deskline IRC bot", sasl_login=args.login)
    except irc.client.ServerConnectionError as error:
        sys.exit(f"cannot connect: {error}")

    while connection.is_connected():
        reactor.process_once(timeout=0.2)
        if args.max_tickets and len(greeted) >= args.max_tickets:
            time.sleep(0.5)
            reactor.process_once(timeout=0.2)
            connection.quit("done")
            break
        if args.idle_exit and time.monotonic() - last_line[0] > args.idle_exit:
            print("idle, leaving", flush=True)
            connection.quit("idle")
            break
    return 0 if (not args.max_tickets or len(greeted) >= args.max_tickets) else 1


if __name__ == "__main__":
    sys.exit(main())
