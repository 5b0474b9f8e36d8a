import DesklineCore
@testable import DesklineGateway
import Foundation
import Testing

/// What the IRC dialect shows and when: echoes in order with the other pushes, channels that
/// stay followed or stay parted, queries that mark nothing read, lines that fit 512 bytes.
struct IRCDeliveryTests {
    @Test func echoesKeepTheOrderOfTheConversationUnderAPipelinedBurst() async throws {
        try await withServer { server in
            let id = try await IRCChannelTests.openTicket(server)
            let (amy, _) = try await server.ircLogin("amy@acme.test", caps: ["echo-message", "message-tags"])
            _ = try await amy.irc("JOIN \(id)")
            // Ann writes while Amy bursts: whatever the interleaving, Amy sees every entry once,
            // in the ticket's order (msgid), her own among them.
            let customer = Task {
                let ann = try await server.login("ann@acme.test")
                for n in 1...20 { _ = try await ann.command("MSG \(id) c\(n)") }
                await ann.close()
            }
            try await amy.sendRaw(Array((1...40).map { "PRIVMSG \(id) :a\($0)\r\n" }.joined().utf8))
            var seqs: [Int] = []
            var texts: [String] = []
            while texts.count < 60 {
                let line = try #require(try await amy.readLine())
                let tags = line.split(separator: " ").first?.dropFirst().split(separator: ";") ?? []
                guard line.contains(" PRIVMSG \(id) :"), let msgid = tags.first(where: { $0.hasPrefix("msgid=") }),
                      let seq = Int(msgid.split(separator: ".").dropFirst().first ?? "") else { continue }
                seqs.append(seq)
                texts.append(String(line.split(separator: ":").last ?? ""))
            }
            try await customer.value
            #expect(seqs == Array(1...60), "out of order: \(seqs)")
            #expect(texts.filter { $0.hasPrefix("a") } == (1...40).map { "a\($0)" })
            await amy.close()
        }
    }

    @Test func aLabelledMessagesEchoCarriesTheLabelAndIsTheWholeResponse() async throws {
        try await withServer { server in
            let id = try await IRCChannelTests.openTicket(server)
            let (amy, _) = try await server.ircLogin("amy@acme.test", caps: ["echo-message", "labeled-response", "batch", "message-tags"])
            _ = try await amy.irc("JOIN \(id)")
            let echo = try await amy.irc("@label=x1 PRIVMSG \(id) :  hello  ")
            #expect(echo.count == 1 && echo[0].hasPrefix("@label=x1;msgid=1001.1 :Amy_Agent!u2@acme PRIVMSG \(id) :hello"), "\(echo)")
            let note = try await amy.irc("@label=x2 PRIVMSG @\(id) :psst")
            #expect(note.count == 1 && note[0].hasPrefix("@label=x2;") && note[0].hasSuffix(" PRIVMSG @\(id) :psst"), "\(note)")
            // A message that fails has no echo: its label goes with the error.
            #expect(try await amy.irc("@label=x3 PRIVMSG #9999 :nobody") == ["@label=x3 :deskline 403 Amy_Agent #9999 :No such channel"])
            // To the service: echoed, then answered.
            let service = try await amy.irc("PRIVMSG Deskline :STATUS \(id) pending")
            #expect(service.first == ":Amy_Agent!u2@acme PRIVMSG Deskline :STATUS \(id) pending", "\(service)")
            #expect(service.contains { $0.hasSuffix("NOTICE \(id) :Amy Agent set \(id) to pending") }, "\(service)")
            #expect(service.contains(":Deskline!service@deskline TOPIC \(id) :Printer on fire [pending, unassigned]"), "\(service)")
            await amy.close()
        }
    }

    @Test func aReassignedTicketStaysFollowedByThePreviousAssignee() async throws {
        try await withServer { server in
            let id = try await IRCChannelTests.openTicket(server)
            let ada = try await server.login("ada@acme.test")
            _ = try await ada.command("ASSIGN \(id) amy@acme.test")
            let (amy, lines) = try await server.ircLogin("amy@acme.test")
            #expect(lines.contains(":Amy_Agent!u2@acme JOIN \(id)"))
            _ = try await ada.command("ASSIGN \(id) abe@acme.test")
            #expect(try await amy.expectLine(startingWith: ":Deskline!service@deskline NOTICE \(id)") == ":Deskline!service@deskline NOTICE \(id) :\(id) assigned to Abe_Agent (Abe Agent) by Ada Admin")
            let ann = try await server.login("ann@acme.test")
            _ = try await ann.command("MSG \(id) still there?")
            #expect(try await amy.expectLine(startingWith: ":Ann_Customer") == ":Ann_Customer!u1@acme PRIVMSG \(id) :still there?")
            // PART ends it, and the next message does not pull her back in.
            _ = try await amy.irc("PART \(id)")
            #expect(try await amy.irc("NAMES \(id)") == [":deskline 353 Amy_Agent = \(id) :Ann_Customer @Abe_Agent", ":deskline 366 Amy_Agent \(id) :End of /NAMES list."])
            _ = try await ann.command("MSG \(id) hello?")
            _ = try await ada.command("MSG \(id) marker")
            let after = try await amy.sync()
            #expect(!after.contains { $0.contains(" JOIN ") || $0.contains("hello?") }, "\(after)")
            for client in [ada, amy, ann] { await client.close() }
        }
    }

    @Test func aCustomerWhoPartsTheirTicketIsToldOfNewMessagesWithoutBeingPulledBackIn() async throws {
        try await withServer { server in
            let id = try await IRCChannelTests.openTicket(server)
            let (ann, _) = try await server.ircLogin("ann@acme.test")
            #expect(try await ann.irc("PART \(id)") == [":Ann_Customer!u1@acme PART \(id)"])
            let amy = try await server.login("amy@acme.test")
            _ = try await amy.command("MSG \(id) We replied")
            #expect(try await ann.expectLine(startingWith: ":Deskline") == ":Deskline!service@deskline NOTICE Ann_Customer :\(id) (Printer on fire): message from Amy Agent: We replied — /join \(id) to answer")
            await ann.close()
            await amy.close()
        }
    }

    @Test func queriesClientsSendOnTheirOwnMarkNothingRead() async throws {
        try await withServer { server in
            let id = try await IRCChannelTests.openTicket(server)
            let amy = try await server.login("amy@acme.test")
            _ = try await amy.command("MSG \(id) an answer")
            let (ann, _) = try await server.ircLogin("ann@acme.test")
            for query in ["MODE \(id)", "WHO \(id)", "NAMES \(id)", "TOPIC \(id)", "LIST"] { _ = try await ann.irc(query) }
            let native = try await server.login("ann@acme.test")
            #expect(try await native.command("TICKETS").first?.contains(" 1 ") == true, "unread is still 1")
            _ = try await ann.irc("CHATHISTORY LATEST \(id) * 10")
            #expect(try await native.command("TICKETS").first?.contains(" 0 ") == true, "read once shown")
            for client in [amy, ann, native] { await client.close() }
        }
    }

    @Test func longMessagesAreCutIntoLinesAClientCanRead() async throws {
        try await withServer { server in
            let id = try await IRCChannelTests.openTicket(server)
            let (amy, _) = try await server.ircLogin("amy@acme.test", caps: ["server-time"])
            _ = try await amy.irc("JOIN \(id)")
            let words = (1...600).map { "w\($0)" }.joined(separator: " ") + " " + String(repeating: "é", count: 400)
            let ann = try await server.login("ann@acme.test")
            _ = try await ann.command("MSG \(id) \(words)")
            var parts: [String] = []
            while parts.joined().count < words.count {
                let line = try await amy.expectLine(startingWith: "@time=")
                let bare = String(line.drop { $0 != " " }.dropFirst())
                #expect(bare.utf8.count <= 510, "\(bare.utf8.count) bytes")
                #expect(bare.hasPrefix(":Ann_Customer!u1@acme PRIVMSG \(id) :"))
                parts.append(String(bare.dropFirst(":Ann_Customer!u1@acme PRIVMSG \(id) :".count)))
            }
            #expect(parts.joined() == words)
            #expect(parts.count > 3 && parts.dropLast(2).allSatisfy { $0.hasSuffix(" ") }, "cut between words")
            await amy.close()
            await ann.close()
        }
    }
}

/// Labels on echoes, and lines cut to 512 bytes, as found by review.
struct IRCLabelledEchoTests {
    @Test func eachEchoCarriesItsOwnMessagesLabelAndNoOther() async throws {
        try await withServer { server in
            let id = try await IRCChannelTests.openTicket(server)
            let (amy, _) = try await server.ircLogin("amy@acme.test", caps: ["echo-message", "labeled-response", "batch", "message-tags"])
            _ = try await amy.irc("JOIN \(id)")
            // An unlabelled and a labelled message with the same text, in one write.
            try await amy.sendRaw(Array("PRIVMSG \(id) :same text\r\n@label=L1 PRIVMSG \(id) :same text\r\nNOTICE \(id) :a notice\r\n".utf8))
            var lines: [String] = []
            while lines.count < 3 { lines.append(try #require(try await amy.readLine())) }
            #expect(lines[0] == "@msgid=1001.1 :Amy_Agent!u2@acme PRIVMSG \(id) :same text", "\(lines)")
            #expect(lines[1] == "@label=L1;msgid=1001.2 :Amy_Agent!u2@acme PRIVMSG \(id) :same text", "\(lines)")
            #expect(lines[2] == "@msgid=1001.3 :Amy_Agent!u2@acme NOTICE \(id) :a notice", "\(lines)")
            // A label the server ignores (over 64 bytes) is not echoed; one with escapes comes
            // back as sent.
            let long = String(repeating: "x", count: 65)
            #expect(try await amy.irc("@label=\(long) PRIVMSG \(id) :x") == ["@msgid=1001.4 :Amy_Agent!u2@acme PRIVMSG \(id) :x"])
            #expect(try await amy.irc(#"@label=a\nb\sc PRIVMSG \#(id) :y"#) == [#"@label=a\nb\sc;msgid=1001.5 :Amy_Agent!u2@acme PRIVMSG \#(id) :y"#])
            #expect(try await amy.irc(#"@label=a\nb\sc PING :z"#) == [#"@label=a\nb\sc :deskline PONG deskline :z"#])
            // A failed labelled message: its error is the labelled response, and it leaves no
            // label behind for a later message.
            #expect(try await amy.irc("@label=F1 PRIVMSG #9999 :x") == ["@label=F1 :deskline 403 Amy_Agent #9999 :No such channel"])
            #expect(try await amy.irc("PRIVMSG \(id) :x") == ["@msgid=1001.6 :Amy_Agent!u2@acme PRIVMSG \(id) :x"])
            // A long labelled message: its parts in a labelled batch, one msgid on the first.
            let text = (1...150).map { "word\($0)" }.joined(separator: " ")
            let echo = try await amy.irc("@label=LONG PRIVMSG \(id) :\(text)")
            #expect(echo.first?.hasPrefix("@label=LONG :deskline BATCH +") == true && echo.first?.hasSuffix(" labeled-response") == true, "\(echo)")
            let parts = echo.dropFirst().dropLast()
            #expect(parts.count >= 2 && parts.allSatisfy { $0.hasPrefix("@batch=") }, "\(echo)")
            #expect(parts.filter { $0.contains("msgid=") }.count == 1)
            #expect(echo.last?.hasPrefix(":deskline BATCH -") == true)
            await amy.close()
        }
    }

    @Test func topicsNamesAndMOTDLinesFitIn512Bytes() async throws {
        try await withServer { server in
            let subject = String(repeating: "🔥", count: 190)
            let id = try await IRCChannelTests.openTicket(server, subject: subject)
            _ = try await server.accounts.setMOTD(of: TenantID(rawValue: "acme")!, to: String(repeating: "long motd line ", count: 100))
            let (ann, lines) = try await server.ircLogin("ann@acme.test")
            for line in lines { #expect(line.utf8.count <= 510, "\(line.utf8.count) bytes: \(line.prefix(80))") }
            let topic = try #require(lines.first { $0.contains(" 332 ") })
            #expect(topic.hasPrefix(":deskline 332 Ann_Customer \(id) :🔥🔥") && topic.hasSuffix("..."))
            #expect(lines.filter { $0.contains(" 372 ") }.count >= 3)
            await ann.close()
        }
    }
}

/// Who is in a channel, kept current: staff who start or stop following a ticket, and an
/// assignment that moves it to someone else.
struct IRCMembershipTests {
    @Test func staffJoiningLeavingAndBeingAssignedShowInTheChannel() async throws {
        try await withServer { server in
            let id = try await IRCChannelTests.openTicket(server)
            let (ann, _) = try await server.ircLogin("ann@acme.test")
            // A native agent who follows the ticket joins it for IRC clients too.
            let abe = try await server.login("abe@acme.test")
            _ = try await abe.command("JOIN \(id)")
            #expect(try await ann.expectLine(startingWith: ":Abe_Agent") == ":Abe_Agent!u5@acme JOIN \(id)")
            #expect(try await ann.readLine() == ":Deskline!service@deskline MODE \(id) +o Abe_Agent")
            // A second session of the same agent changes nothing; the last one leaving parts.
            let abe2 = try await server.login("abe@acme.test")
            _ = try await abe2.command("JOIN \(id)")
            _ = try await abe.command("PART \(id)")
            await abe2.close()
            #expect(try await ann.expectLine(startingWith: ":Abe_Agent") == ":Abe_Agent!u5@acme PART \(id)")
            // Assigned to Amy (not following): she appears; reassigned to Abe: Amy leaves.
            let ada = try await server.login("ada@acme.test")
            _ = try await ada.command("ASSIGN \(id) amy@acme.test")
            #expect(try await ann.expectLine(startingWith: ":Deskline!service@deskline TOPIC") == ":Deskline!service@deskline TOPIC \(id) :Printer on fire [open, assigned to Amy Agent]")
            #expect(try await ann.readLine() == ":Amy_Agent!u2@acme JOIN \(id)")
            #expect(try await ann.readLine() == ":Deskline!service@deskline MODE \(id) +o Amy_Agent")
            _ = try await ada.command("ASSIGN \(id) abe@acme.test")
            #expect(try await ann.expectLine(startingWith: ":Deskline!service@deskline TOPIC") == ":Deskline!service@deskline TOPIC \(id) :Printer on fire [open, assigned to Abe Agent]")
            #expect(try await ann.readLine() == ":Abe_Agent!u5@acme JOIN \(id)")
            #expect(try await ann.readLine() == ":Deskline!service@deskline MODE \(id) +o Abe_Agent")
            #expect(try await ann.readLine() == ":Amy_Agent!u2@acme PART \(id)")
            #expect(try await ann.irc("NAMES \(id)").first == ":deskline 353 Ann_Customer = \(id) :Ann_Customer @Abe_Agent")
            for client in [ann, abe, ada] { await client.close() }
        }
    }
}
