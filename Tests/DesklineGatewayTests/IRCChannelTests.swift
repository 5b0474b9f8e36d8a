import DesklineCore
@testable import DesklineGateway
import Foundation
import Testing

/// Tickets as channels in the IRC dialect, over real sockets: auto-join, JOIN/PART, messages
/// and notes, pushed events, the service user, and the authorization matrix in this dialect.
struct IRCChannelTests {
    /// Ann (native) opens a ticket; returns its number.
    static func openTicket(_ server: TestServer, as email: String = "ann@acme.test", subject: String = "Printer on fire") async throws -> String {
        let customer = try await server.login(email)
        let reply = try await customer.command("NEW \(subject)")
        await customer.close()
        return try #require(reply.last?.split(separator: " ").dropFirst(2).first.map(String.init), "\(reply)")
    }

    @Test func customersAreJoinedToTheirOpenTicketsAndAgentsToTheirAssignedOnes() async throws {
        try await withServer { server in
            let id = try await Self.openTicket(server)
            let amy = try await server.login("amy@acme.test")
            _ = try await amy.command("ASSIGN \(id) me")
            let (ann, annLines) = try await server.ircLogin("ann@acme.test")
            let join = try #require(annLines.firstIndex(of: ":Ann_Customer!u1@acme JOIN \(id)"), "\(annLines)")
            #expect(annLines[join + 1] == ":deskline 332 Ann_Customer \(id) :Printer on fire [open, assigned to Amy Agent]")
            #expect(annLines[join + 2].hasPrefix(":deskline 333 Ann_Customer \(id) Deskline!service@deskline "))
            #expect(annLines[join + 3] == ":deskline 353 Ann_Customer = \(id) :Ann_Customer @Amy_Agent")
            #expect(annLines[join + 4] == ":deskline 366 Ann_Customer \(id) :End of /NAMES list.")
            let (amyIRC, amyLines) = try await server.ircLogin("amy@acme.test")
            #expect(amyLines.contains(":Amy_Agent!u2@acme JOIN \(id)"))
            let (abe, abeLines) = try await server.ircLogin("abe@acme.test")
            #expect(!abeLines.contains { $0.contains(" JOIN ") }, "Abe is assigned nothing: \(abeLines)")
            for client in [ann, amyIRC, abe, amy] { await client.close() }
        }
    }

    @Test func messagesFlowBothWaysAndNotesReachOnlyStaff() async throws {
        try await withServer { server in
            let id = try await Self.openTicket(server)
            let (amy, _) = try await server.ircLogin("amy@acme.test", caps: ["server-time", "echo-message", "message-tags"])
            let joined = try await amy.irc("JOIN \(id)")
            #expect(joined.first == ":Amy_Agent!u2@acme JOIN \(id)")
            #expect(joined.contains(":deskline 353 Amy_Agent = \(id) :Ann_Customer @Amy_Agent"))
            let (ann, _) = try await server.ircLogin("ann@acme.test")
            let annNative = try await server.login("ann@acme.test")
            let (ada, _) = try await server.ircLogin("ada@acme.test")
            #expect(try await ada.irc("JOIN \(id)").contains(":deskline 353 Ada_Admin = \(id) :Ann_Customer @Amy_Agent @Ada_Admin"))
            // Those in the channel see a staff member join it, as an op.
            #expect(try await amy.expectLine(startingWith: ":Ada_Admin") == ":Ada_Admin!u3@acme JOIN \(id)")
            #expect(try await amy.readLine() == ":Deskline!service@deskline MODE \(id) +o Ada_Admin")
            #expect(try await ann.expectLine(startingWith: ":Ada_Admin") == ":Ada_Admin!u3@acme JOIN \(id)")

            // The agent answers: the customer sees it in the channel, from the agent's nick.
            let echo = try await amy.irc("PRIVMSG \(id) :We are on it")
            #expect(echo.count == 1 && echo[0].hasPrefix("@time=") && echo[0].contains(";msgid=") && echo[0].hasSuffix(" :Amy_Agent!u2@acme PRIVMSG \(id) :We are on it"), "\(echo)")
            #expect(try await ann.expectLine(startingWith: ":Amy_Agent!u2@acme PRIVMSG \(id) ") == ":Amy_Agent!u2@acme PRIVMSG \(id) :We are on it")
            #expect(try await annNative.expectLine(startingWith: "EVENT TICKET").hasSuffix(" message agent Amy\\sAgent :We are on it"))

            // A note to the channel's ops: staff see it, the customer never does, in any dialect.
            // (Pushes to other connections are awaited line by line: a PING to another
            // connection is no barrier for them.)
            #expect(try await amy.irc("PRIVMSG @\(id) :customer sounds upset").count == 1)
            #expect(try await ada.expectLine(startingWith: ":Amy_Agent!u2@acme PRIVMSG @") == ":Amy_Agent!u2@acme PRIVMSG @\(id) :customer sounds upset")
            #expect(try await amy.irc("NOTICE @\(id) :weechat's /wallchops").count == 1)
            #expect(try await ada.expectLine(startingWith: ":Amy_Agent!u2@acme PRIVMSG @") == ":Amy_Agent!u2@acme PRIVMSG @\(id) :weechat's /wallchops")

            // The customer writes: the agent (in the channel) gets it, and an echo is not sent
            // to a client that did not ask for one.
            #expect(try await ann.irc("PRIVMSG \(id) :Thanks!") == [])
            #expect(try await amy.expectLine(startingWith: "@time=").hasSuffix(":Ann_Customer!u1@acme PRIVMSG \(id) :Thanks!"))
            // A customer cannot write notes.
            #expect(try await ann.irc("PRIVMSG @\(id) :let me in") == [":deskline 482 Ann_Customer \(id) :Only staff write internal notes"])

            // A message after the notes: once the customer has it, anything pushed before it
            // has arrived too (one ticket's events arrive in order).
            #expect(try await amy.irc("PRIVMSG \(id) :last one").count == 1)
            func untilLast(_ client: TestClient) async throws -> [String] {
                var lines: [String] = []
                while let line = try await client.readLine(), !line.hasSuffix(":last one") { lines.append(line) }
                return lines
            }
            let annSaw = try await untilLast(ann) + (try await untilLast(annNative)) + (try await annNative.command("HISTORY \(id)"))
            #expect(!annSaw.contains { $0.contains("upset") || $0.contains("wallchops") }, "a note reached the customer: \(annSaw)")
            for client in [amy, ann, annNative, ada] { await client.close() }
        }
    }

    @Test func notYoursIsNoSuchChannelExactlyLikeNothingAtAll() async throws {
        try await withServer { server in
            let annTicket = try await Self.openTicket(server)
            let (bob, _) = try await server.ircLogin("bob@acme.test")
            let (gia, _) = try await server.ircLogin("gia@globex.test")
            for (client, nick) in [(bob, "Bob_Other"), (gia, "Gia_Agent")] {
                for channel in [annTicket, "#9999"] {
                    #expect(try await client.irc("JOIN \(channel)") == [":deskline 403 \(nick) \(channel) :No such channel"])
                    #expect(try await client.irc("PRIVMSG \(channel) :hello") == [":deskline 403 \(nick) \(channel) :No such channel"])
                    #expect(try await client.irc("TOPIC \(channel)") == [":deskline 403 \(nick) \(channel) :No such channel"])
                    #expect(try await client.irc("NAMES \(channel)") == [":deskline 403 \(nick) \(channel) :No such channel"])
                    #expect(try await client.irc("MODE \(channel)") == [":deskline 403 \(nick) \(channel) :No such channel"])
                    #expect(try await client.irc("PART \(channel)") == [":deskline 442 \(nick) \(channel) :You're not on that channel"])
                }
                #expect(try await client.irc("JOIN #general") == [":deskline 403 \(nick) #general :No such channel"])
            }
            // A customer cannot learn about another customer through WHOIS, online or not; staff
            // online is fine.
            let annOnline = try await server.login("ann@acme.test")
            let amyOnline = try await server.login("amy@acme.test")
            #expect(try await bob.irc("WHOIS Ann_Customer").first == ":deskline 401 Bob_Other Ann_Customer :No such nick/channel")
            #expect(try await bob.irc("WHOIS Abe_Agent").first == ":deskline 401 Bob_Other Abe_Agent :No such nick/channel (not online)")
            #expect(try await bob.irc("WHOIS Amy_Agent").first == ":deskline 311 Bob_Other Amy_Agent u2 acme * :Amy_Agent")
            #expect(try await gia.irc("WHOIS Amy_Agent").first == ":deskline 401 Gia_Agent Amy_Agent :No such nick/channel")
            // Bob's own ticket list and Ann's: no trace of the other.
            let list = try await bob.irc("LIST")
            #expect(list == [":deskline 321 Bob_Other Channel :Users  Name", ":deskline 323 Bob_Other :End of /LIST"])
            for client in [bob, gia, annOnline, amyOnline] { await client.close() }
        }
    }

    @Test func spoofedTagsAndPrefixesChangeNothing() async throws {
        try await withServer { server in
            let id = try await Self.openTicket(server)
            let (amy, _) = try await server.ircLogin("amy@acme.test", caps: ["server-time"])
            _ = try await amy.irc("JOIN \(id)")
            let (ann, _) = try await server.ircLogin("ann@acme.test")
            try await ann.send("@time=2001-01-01T00:00:00.000Z;account=ada;msgid=x :Ada_Admin!u3@acme PRIVMSG \(id) :hi")
            let line = try await amy.expectLine(startingWith: "@time=")
            #expect(!line.contains("2001-01-01") && !line.contains("msgid=x") && !line.contains("account"))
            #expect(line.hasSuffix(" :Ann_Customer!u1@acme PRIVMSG \(id) :hi"))
            for client in [amy, ann] { await client.close() }
        }
    }

    @Test func joinReplaysTheRecentHistoryWithServerTime() async throws {
        try await withServer { server in
            let id = try await Self.openTicket(server)
            let ann = try await server.login("ann@acme.test")
            _ = try await ann.command("MSG \(id) first")
            let amy = try await server.login("amy@acme.test")
            _ = try await amy.command("NOTE \(id) staff only")
            _ = try await amy.command("STATUS \(id) pending")
            let (irc, _) = try await server.ircLogin("ada@acme.test", caps: ["server-time"])
            let lines = try await irc.irc("JOIN \(id)")
            #expect(lines.count == 8, "\(lines)")
            #expect(lines[5].hasPrefix("@time=") && lines[5].hasSuffix(" :Ann_Customer!u1@acme PRIVMSG \(id) :first"))
            #expect(lines[6].hasSuffix(" :Amy_Agent!u2@acme PRIVMSG @\(id) :staff only"))
            #expect(lines[7].hasSuffix(" :Deskline!service@deskline NOTICE \(id) :Amy Agent set \(id) to pending"), "\(lines[7])")
            // A customer's replay has no notes; without server-time the time is in the text.
            let (annIRC, annLines) = try await server.ircLogin("ann@acme.test")
            #expect(annLines.contains(":Ann_Customer!u1@acme JOIN \(id)"))
            #expect(try await annIRC.irc("JOIN \(id)") == [], "already in the channel: nothing")
            _ = try await annIRC.irc("PART \(id)")
            let again = try await annIRC.irc("JOIN \(id)")
            #expect(!again.contains { $0.contains("staff only") })
            #expect(again.contains { $0.hasPrefix(":Ann_Customer!u1@acme PRIVMSG \(id) :[20") && $0.hasSuffix("] first") })
            for client in [ann, amy, irc, annIRC] { await client.close() }
        }
    }

    @Test func theServiceUserRunsTheHelpdeskCommands() async throws {
        try await withServer { server in
            let (ann, _) = try await server.ircLogin("ann@acme.test")
            let opened = try await ann.irc("PRIVMSG Deskline :NEW Printer on fire")
            #expect(opened.first == ":Deskline!service@deskline NOTICE Ann_Customer :Ticket #1001 opened: Printer on fire")
            #expect(opened.dropFirst().first == ":Ann_Customer!u1@acme JOIN #1001", "a new ticket is a channel at once: \(opened)")
            let (amy, amyLines) = try await server.ircLogin("amy@acme.test")
            let amyJoins = amyLines.filter { $0.contains(" JOIN ") }
            #expect(amyJoins.isEmpty, "\(amyJoins)")
            // Raw commands work too, and an unknown one is 421.
            let queue = try await amy.irc("QUEUE")
            #expect(queue.first?.hasPrefix(":Deskline!service@deskline NOTICE Amy_Agent :#1001 open ") == true, "\(queue)")
            #expect(queue.last == ":Deskline!service@deskline NOTICE Amy_Agent :1 tickets")
            #expect(try await amy.irc("PRIVMSG Deskline :FROB") == [":Deskline!service@deskline NOTICE Amy_Agent :UNKNOWN_COMMAND: Unknown command 'FROB'. Type HELP for the commands you can use."])
            // The customer's message in an unassigned ticket: every agent is told by the service.
            #expect(try await ann.irc("PRIVMSG #1001 :Anyone?") == [])
            #expect(try await amy.expectLine(startingWith: ":Deskline") == ":Deskline!service@deskline NOTICE Amy_Agent :#1001 (Printer on fire): message from Ann Customer: Anyone? — /join #1001 to answer")
            // Taking the ticket opens its channel at once, with the change and the new topic; the
            // assignee is named by nick, so clients highlight it.
            let assigned = try await amy.irc("ASSIGN #1001 me")
            #expect(Array(assigned.prefix(1)) == [":Amy_Agent!u2@acme JOIN #1001"], "\(assigned)")
            #expect(assigned.contains(":Deskline!service@deskline NOTICE #1001 :#1001 assigned to Amy_Agent (Amy Agent) by Amy Agent"), "\(assigned)")
            #expect(assigned.contains(":Deskline!service@deskline TOPIC #1001 :Printer on fire [open, assigned to Amy Agent]"))
            #expect(assigned.last == ":Deskline!service@deskline NOTICE Amy_Agent :Ticket #1001 assigned to Amy Agent")
            // The customer: the change, the topic, and Amy joining (before or after them: her own
            // session may follow the ticket before the customer's shows the change).
            var seen: [String] = []
            let wanted = [":Deskline!service@deskline NOTICE #1001 :#1001 assigned to Amy_Agent (Amy Agent) by Amy Agent",
                          ":Deskline!service@deskline TOPIC #1001 :Printer on fire [open, assigned to Amy Agent]",
                          ":Amy_Agent!u2@acme JOIN #1001", ":Deskline!service@deskline MODE #1001 +o Amy_Agent"]
            while !wanted.allSatisfy(seen.contains) { seen.append(try #require(try await ann.readLine())) }
            #expect(seen.filter { $0.contains(" JOIN ") }.count == 1, "\(seen)")
            #expect(try await ann.irc("PRIVMSG #1001 :Hello Amy") == [])
            #expect(try await amy.expectLine(startingWith: ":Ann_Customer") == ":Ann_Customer!u1@acme PRIVMSG #1001 :Hello Amy")
            // Calls arrive as notices.
            #expect(try await ann.irc("PRIVMSG Deskline :CALL #1001 after 5pm").first?.contains("Call 1 requested about #1001") == true)
            #expect(try await amy.expectLine(startingWith: ":Deskline").contains("Call 1 requested by Ann Customer about #1001: phone +1 555 0101 — after 5pm"))
            for client in [ann, amy] { await client.close() }
        }
    }

    @Test func unreadNotificationsAreSummarisedAfterRegistration() async throws {
        try await withServer { server in
            _ = try await Self.openTicket(server)
            let (ada, lines) = try await server.ircLogin("ada@acme.test")
            #expect(lines.last == ":Deskline!service@deskline NOTICE Ada_Admin :You have 1 unread notifications: /msg Deskline NOTIFICATIONS lists them, /msg Deskline READ all marks them read.")
            await ada.close()
        }
    }

    @Test func queriesClientsSendAtConnectAreAnswered() async throws {
        try await withServer { server in
            let id = try await Self.openTicket(server)
            let (amy, _) = try await server.ircLogin("amy@acme.test")
            _ = try await amy.irc("JOIN \(id)")
            #expect(try await amy.irc("MODE Amy_Agent +i") == [":Amy_Agent!u2@acme MODE Amy_Agent :+i"])
            #expect(try await amy.irc("MODE Amy_Agent") == [":deskline 221 Amy_Agent +i"])
            let mode = try await amy.irc("MODE \(id)")
            #expect(mode.first == ":deskline 324 Amy_Agent \(id) +nt")
            #expect(try await amy.irc("MODE \(id) b") == [":deskline 368 Amy_Agent \(id) :End of channel ban list"])
            // (The customer who opened the ticket has logged out: once the server has seen her
            // go, however loaded the machine, she is "G", gone.)
            let deadline = ContinuousClock.now + .seconds(10)
            while try await amy.irc("WHO \(id)").first?.contains(" Ann_Customer H ") == true, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(try await amy.irc("WHO \(id)") == [
                ":deskline 352 Amy_Agent \(id) u1 acme deskline Ann_Customer G :0 Ann_Customer",
                ":deskline 352 Amy_Agent \(id) u2 acme deskline Amy_Agent H@ :0 Amy_Agent",
                ":deskline 315 Amy_Agent \(id) :End of WHO list"])
            #expect(try await amy.irc("TOPIC \(id) :new subject").first?.hasPrefix(":deskline 482 Amy_Agent \(id) :The topic is the ticket's subject") == true)
            #expect(try await amy.irc("AWAY :lunch") == [":deskline 306 Amy_Agent :You have been marked as being away"])
            let agents = try await server.login("ada@acme.test")
            #expect(try await agents.command("AGENTS").contains { $0.contains("amy@acme.test agent away 1") && $0.hasSuffix(":lunch") })
            #expect(try await amy.irc("AWAY") == [":deskline 305 Amy_Agent :You are no longer marked as being away"])
            let list = try await amy.irc("LIST")
            #expect(list.contains(":deskline 322 Amy_Agent \(id) 2 :Printer on fire [open, unassigned]"), "\(list)")
            #expect(try await amy.irc("PART \(id) :done") == [":Amy_Agent!u2@acme PART \(id) :done"])
            for client in [amy, agents] { await client.close() }
        }
    }
}

/// The remaining numerics, each from the line that causes it.
struct IRCNumericTests {
    @Test func everyRefusalHasItsNumeric() async throws {
        try await withServer { server in
            let id = try await IRCChannelTests.openTicket(server)
            let ann = try await server.login("ann@acme.test")
            _ = try await ann.command("CLOSE \(id)")
            let (amy, _) = try await server.ircLogin("amy@acme.test")
            #expect(try await amy.irc("PRIVMSG \(id) :too late") == [
                ":deskline 404 Amy_Agent \(id) :Cannot send to channel: ticket \(id) is closed (open a new one: /msg Deskline NEW <subject>)"])
            #expect(try await amy.irc("NOTICE \(id) :too late") == [], "a NOTICE is never answered with an error")
            #expect(try await amy.irc("PRIVMSG") == [":deskline 411 Amy_Agent :No recipient given (PRIVMSG)"])
            #expect(try await amy.irc("PRIVMSG \(id)") == [":deskline 412 Amy_Agent :No text to send"])
            #expect(try await amy.irc("PRIVMSG Ann_Customer :psst") == [
                ":deskline 401 Amy_Agent Ann_Customer :No such nick/channel (write in a ticket's channel, or to Deskline)"])
            #expect(try await amy.irc("WHOIS") == [":deskline 431 Amy_Agent :No nickname given"])
            #expect(try await amy.irc("JOIN") == [":deskline 461 Amy_Agent JOIN :Not enough parameters"])
            #expect(try await amy.irc("MODE Ann_Customer +i") == [":deskline 502 Amy_Agent :Can't change mode for other users"])
            #expect(try await amy.irc("MODE \(id) +m") == [":deskline 482 Amy_Agent \(id) :Channel modes are fixed: staff are ops, the customer is not"])
            #expect(try await amy.irc("AWAY :on the phone") == [":deskline 306 Amy_Agent :You have been marked as being away"])
            let (ada, _) = try await server.ircLogin("ada@acme.test")
            #expect(try await ada.irc("WHOIS Amy_Agent") == [
                ":deskline 311 Ada_Admin Amy_Agent u2 acme * :Amy_Agent", ":deskline 312 Ada_Admin Amy_Agent deskline :Deskline",
                ":deskline 301 Ada_Admin Amy_Agent :on the phone", ":deskline 318 Ada_Admin Amy_Agent :End of /WHOIS list."])
            #expect(try await ada.irc("NICK") == [":deskline 447 Ada_Admin :Your nick comes from your name in the helpdesk (Ada_Admin); it cannot be changed here"])
            #expect(try await ada.irc("PRIVMSG #general :hi") == [":deskline 403 Ada_Admin #general :No such channel"])
            #expect(try await ada.irc("NONEXISTENT_COMMAND x") == [":deskline 421 Ada_Admin NONEXISTENT_COMMAND :Unknown command"])
            let guest = try await server.ircConnect()
            #expect(try await guest.irc("NICK") == [":deskline 431 * :No nickname given"])
            #expect(try await guest.irc("USER a") == [":deskline 461 * USER :Not enough parameters"])
            #expect(try await guest.irc("USER a * * :") == [":deskline 461 * USER :Not enough parameters"], "an empty realname")
            try await guest.send("PING")
            #expect(try await guest.readLine() == ":deskline 461 * PING :Not enough parameters")
            for client in [ann, amy, ada, guest] { await client.close() }
        }
    }
}
