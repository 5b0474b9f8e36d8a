import DesklineCore
@testable import DesklineGateway
import Foundation
import Testing

/// The IRCv3 extensions of the IRC dialect, over real sockets: labeled-response with batch,
/// draft/chathistory over a ticket's entries, the chathistory batch of a JOIN replay.
struct IRCv3Tests {
    static let all = ["batch", "draft/chathistory", "echo-message", "labeled-response", "message-tags", "server-time"]

    @Test func labelledCommandsGetOneLabelledLineAnACKOrALabelledBatch() async throws {
        try await withServer { server in
            let id = try await IRCChannelTests.openTicket(server)
            let (amy, _) = try await server.ircLogin("amy@acme.test", caps: Self.all)
            // One line: labelled.
            #expect(try await amy.irc("@label=p1 PING :x") == ["@label=p1 :deskline PONG deskline :x"])
            // No line: ACK.
            #expect(try await amy.irc("@label=p2 PONG :x") == ["@label=p2 :deskline ACK"])
            // Several: a labelled batch, and a nested chathistory batch keeps its own reference.
            let ann = try await server.login("ann@acme.test")
            _ = try await ann.command("MSG \(id) first")
            #expect(try await amy.expectLine(startingWith: ":Deskline").contains("message from Ann Customer: first"))
            let joined = try await amy.irc("@label=j1 JOIN \(id)")
            // (References are the connection's own: the inner one was handed out first.)
            #expect(joined == [
                "@label=j1 :deskline BATCH +2 labeled-response",
                "@batch=2 :Amy_Agent!u2@acme JOIN \(id)",
                "@batch=2 :deskline 332 Amy_Agent \(id) :Printer on fire [open, unassigned]",
                joined[3],
                "@batch=2 :deskline 353 Amy_Agent = \(id) :Ann_Customer @Amy_Agent",
                "@batch=2 :deskline 366 Amy_Agent \(id) :End of /NAMES list.",
                "@batch=2 :deskline BATCH +1 chathistory \(id)",
                joined[7],
                "@batch=2 :deskline BATCH -1",
                ":deskline BATCH -2",
            ])
            #expect(joined[3].hasPrefix("@batch=2 :deskline 333 Amy_Agent \(id) Deskline!service@deskline "))
            #expect(joined[7].hasPrefix("@batch=1;time=") && joined[7].hasSuffix(";msgid=1001.1 :Ann_Customer!u1@acme PRIVMSG \(id) :first"), "\(joined[7])")
            // An echoed message is the labelled answer to PRIVMSG, with its time and id.
            let echo = try await amy.irc("@label=m1 PRIVMSG \(id) :On it")
            #expect(echo.count == 1 && echo[0].hasPrefix("@label=m1;time=") && echo[0].contains(";msgid=1001.2 "), "\(echo)")
            // A label the client should not have sent (too long) is not echoed back.
            #expect(try await amy.irc("@label=\(String(repeating: "x", count: 65)) PING :y") == [":deskline PONG deskline :y"])
            await amy.close()
        }
    }

    @Test func chathistoryPagesThroughATicketByMsgidAndTimestamp() async throws {
        try await withServer { server in
            let id = try await IRCChannelTests.openTicket(server)
            let ann = try await server.login("ann@acme.test")
            for n in 1...6 {
                _ = try await ann.command("MSG \(id) m\(n)")
                try await Task.sleep(for: .milliseconds(3)) // (times are kept to the millisecond)
            }
            let (amy, _) = try await server.ircLogin("amy@acme.test", caps: Self.all)
            func texts(_ lines: [String]) -> [String] {
                lines.filter { $0.contains(" PRIVMSG ") }.map { String($0.split(separator: ":").last ?? "") }
            }
            let latest = try await amy.irc("CHATHISTORY LATEST \(id) * 3")
            #expect(latest.first == ":deskline BATCH +1 chathistory \(id)" && latest.last == ":deskline BATCH -1")
            #expect(texts(latest) == ["m4", "m5", "m6"])
            #expect(texts(try await amy.irc("CHATHISTORY BEFORE \(id) msgid=1001.4 2")) == ["m2", "m3"])
            #expect(texts(try await amy.irc("CHATHISTORY AFTER \(id) msgid=1001.4 10")) == ["m5", "m6"])
            #expect(texts(try await amy.irc("CHATHISTORY AROUND \(id) msgid=1001.4 3")) == ["m3", "m4", "m5"])
            #expect(texts(try await amy.irc("CHATHISTORY LATEST \(id) msgid=1001.5 10")) == ["m6"])
            #expect(texts(try await amy.irc("CHATHISTORY BETWEEN \(id) msgid=1001.2 msgid=1001.6 10")) == ["m3", "m4", "m5"])
            #expect(texts(try await amy.irc("CHATHISTORY BETWEEN \(id) msgid=1001.6 msgid=1001.2 2")) == ["m4", "m5"])
            // Timestamps: the time of m3.
            let m3 = try #require(try await amy.irc("CHATHISTORY AFTER \(id) msgid=1001.2 1").first { $0.contains("PRIVMSG") })
            #expect(m3.hasSuffix(":m3"))
            let time = try #require(m3.split(separator: " ").first?.split(separator: ";").first { $0.hasPrefix("time=") }?.dropFirst(5))
            #expect(texts(try await amy.irc("CHATHISTORY BEFORE \(id) timestamp=\(time) 10")) == ["m1", "m2"])
            #expect(texts(try await amy.irc("CHATHISTORY AFTER \(id) timestamp=\(time) 2")) == ["m4", "m5"])
            #expect(texts(try await amy.irc("CHATHISTORY LATEST \(id) timestamp=\(time) 10")) == ["m4", "m5", "m6"])
            // Errors are standard replies.
            #expect(try await amy.irc("CHATHISTORY LATEST #9999 * 10") == [":deskline FAIL CHATHISTORY INVALID_TARGET LATEST #9999 :No such channel"])
            #expect(try await amy.irc("CHATHISTORY BEFORE \(id) * 10") == [":deskline FAIL CHATHISTORY INVALID_PARAMS BEFORE :BEFORE needs a msgid= or timestamp= reference"])
            #expect(try await amy.irc("CHATHISTORY LATEST \(id) msgid=2002.1 10") == [":deskline FAIL CHATHISTORY INVALID_PARAMS LATEST :A reference is *, msgid=1001.<n> or timestamp=<ISO 8601>"])
            #expect(try await amy.irc("CHATHISTORY LATEST \(id) * zero") == [":deskline FAIL CHATHISTORY INVALID_PARAMS LATEST :The limit must be a positive number"])
            let targets = try await amy.irc("CHATHISTORY TARGETS timestamp=2020-01-01T00:00:00.000Z timestamp=2030-01-01T00:00:00.000Z 10")
            #expect(targets.count == 2 && targets[0].hasPrefix(":deskline BATCH +") && targets[0].hasSuffix(" draft/chathistory-targets"), "\(targets)")
            await amy.close()
            await ann.close()
        }
    }

    @Test func aCustomersChathistoryHasNoNotesAndNoOtherCustomersTickets() async throws {
        try await withServer { server in
            let id = try await IRCChannelTests.openTicket(server)
            let amy = try await server.login("amy@acme.test")
            _ = try await amy.command("NOTE \(id) internal: refund denied")
            _ = try await amy.command("MSG \(id) visible reply")
            let (ann, _) = try await server.ircLogin("ann@acme.test", caps: Self.all)
            for sub in ["LATEST \(id) * 100", "AROUND \(id) msgid=1001.1.1 100", "AFTER \(id) timestamp=2000-01-01T00:00:00.000Z 100"] {
                let lines = try await ann.irc("CHATHISTORY \(sub)")
                #expect(!lines.contains { $0.contains("refund") || $0.contains("@#") }, "\(sub): \(lines)")
                #expect(lines.contains { $0.hasSuffix(":visible reply") }, "\(sub): \(lines)")
            }
            let (bob, _) = try await server.ircLogin("bob@acme.test", caps: Self.all)
            #expect(try await bob.irc("CHATHISTORY LATEST \(id) * 100") == [":deskline FAIL CHATHISTORY INVALID_TARGET LATEST \(id) :No such channel"])
            for client in [amy, ann, bob] { await client.close() }
        }
    }
}
