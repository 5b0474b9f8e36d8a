import DesklineCore
@testable import DesklineGateway
import Foundation
import Testing

/// The IRC dialect's registration, over real sockets: CAP, SASL PLAIN, PASS, NICK/USER, the
/// welcome burst, and what a connection that cannot log in is told.
struct IRCRegistrationTests {
    @Test func passLogsInAndTheServerChoosesTheNick() async throws {
        try await withServer { server in
            let (client, lines) = try await server.ircLogin("amy@acme.test", nick: "whatever")
            #expect(lines.first == ":deskline CAP * LS :batch draft/chathistory echo-message labeled-response message-tags sasl=PLAIN server-time")
            #expect(lines.contains(":deskline 001 Amy_Agent :Welcome to the Acme Inc helpdesk, Amy Agent (Amy_Agent)"))
            let isupport = lines.filter { $0.hasPrefix(":deskline 005 Amy_Agent ") }.joined(separator: " ")
            for token in ["NETWORK=Acme\\x20Inc", "CHANTYPES=#", "PREFIX=(o)@", "STATUSMSG=@", "CASEMAPPING=ascii", "UTF8ONLY",
                          "NICKLEN=30", "TOPICLEN=260"] {
                #expect(isupport.contains(" \(token) "), "005 lacks \(token): \(isupport)")
            }
            #expect(lines.contains { $0.hasPrefix(":deskline 002 Amy_Agent ") && $0.contains("deskline-\(DesklineVersion.current)") })
            #expect(lines.contains { $0.hasPrefix(":deskline 003 Amy_Agent ") })
            #expect(lines.contains(":deskline 004 Amy_Agent deskline deskline-\(DesklineVersion.current) i bnot"))
            #expect(lines.contains { $0.hasPrefix(":deskline 422 Amy_Agent :MOTD File is missing") })
            // Nothing from the native dialect, ever.
            #expect(!lines.contains { $0.hasPrefix("EVENT") || $0.hasPrefix("OK") || $0.hasPrefix("ERR") })
            await client.close()
        }
    }

    @Test func theTenantsMOTDIsShownAfterTheWelcome() async throws {
        try await withServer { server in
            _ = try await server.accounts.setMOTD(of: TenantID(rawValue: "acme")!, to: "\n  Welcome, agents.\u{1B}[31m \n\nOn call: Amy\n\n")
            let (client, lines) = try await server.ircLogin("amy@acme.test")
            let start = try #require(lines.firstIndex(of: ":deskline 375 Amy_Agent :- deskline Message of the day -"), "\(lines)")
            #expect(Array(lines[start...].prefix(5)) == [
                ":deskline 375 Amy_Agent :- deskline Message of the day -",
                ":deskline 372 Amy_Agent :-   Welcome, agents.",
                ":deskline 372 Amy_Agent :- ",
                ":deskline 372 Amy_Agent :- On call: Amy",
                ":deskline 376 Amy_Agent :End of /MOTD command.",
            ])
            #expect(try await client.irc("MOTD").count == 5)
            await #expect(throws: DesklineError.invalidArgument("the message of the day is empty")) {
                try await server.accounts.setMOTD(of: TenantID(rawValue: "acme")!, to: " \n ")
            }
            await client.close()
        }
    }

    @Test func tenantFormOfPassAndSASLPlainBothLogIn() async throws {
        try await withServer { server in
            let (a, aLines) = try await server.ircLogin("acme/ann@acme.test")
            #expect(aLines.contains { $0.hasPrefix(":deskline 001 Ann_Customer ") })
            let (c, cLines) = try await server.ircLogin("globex/gia@globex.test", sasl: true)
            #expect(cLines.contains(":deskline 900 guest guest!u2@globex globex/gia@globex.test :You are now logged in as globex/gia@globex.test"))
            await c.close()
            let (b, bLines) = try await server.ircLogin("gia@globex.test", sasl: true)
            #expect(bLines.contains(":deskline CAP guest ACK :sasl"))
            #expect(bLines.contains("AUTHENTICATE +"))
            #expect(bLines.contains(":deskline 900 guest guest!u2@globex globex/gia@globex.test :You are now logged in as gia@globex.test"))
            #expect(bLines.contains(":deskline 903 guest :SASL authentication successful"))
            #expect(bLines.contains { $0.hasPrefix(":deskline 001 Gia_Agent ") })
            #expect(bLines.contains { $0.contains("NETWORK=Globex ") })
            await a.close()
            await b.close()
        }
    }

    @Test func aWrongPasswordIsRefusedAndTheConnectionClosed() async throws {
        try await withServer { server in
            let client = try await server.ircConnect()
            try await client.send("PASS amy@acme.test:wrong")
            try await client.send("NICK amy")
            try await client.send("USER amy 0 * :Amy")
            let rest = try await client.readUntilClosed()
            #expect(rest == [":deskline 464 amy :Password incorrect", "ERROR :Closing link: Password incorrect"])
        }
    }

    @Test func noLoginAtAllIsRefusedWithoutAWelcome() async throws {
        try await withServer { server in
            let client = try await server.ircConnect()
            try await client.send("NICK amy")
            try await client.send("USER amy 0 * :Amy")
            let rest = try await client.readUntilClosed()
            #expect(rest.first?.hasPrefix(":deskline 464 amy :This helpdesk needs a login") == true, "\(rest)")
            #expect(rest.last?.hasPrefix("ERROR :Closing link:") == true)
            #expect(!rest.contains { $0.contains(" 001 ") })
        }
    }

    @Test func saslFailuresAndAbortsAreAnsweredAndThePasswordCanBeRetried() async throws {
        try await withServer { server in
            let client = try await server.ircConnect()
            try await client.send("CAP REQ :sasl")
            #expect(try await client.readLine() == ":deskline CAP * ACK :sasl")
            #expect(try await client.irc("AUTHENTICATE SCRAM-SHA-256") == [
                ":deskline 908 * PLAIN :are available SASL mechanisms", ":deskline 904 * :SASL authentication failed"])
            #expect(try await client.irc("AUTHENTICATE PLAIN") == ["AUTHENTICATE +"])
            #expect(try await client.irc("AUTHENTICATE *") == [":deskline 906 * :SASL authentication aborted"])
            #expect(try await client.irc("AUTHENTICATE PLAIN") == ["AUTHENTICATE +"])
            let wrong = Data("\0amy@acme.test\0nope".utf8).base64EncodedString()
            #expect(try await client.irc("AUTHENTICATE \(wrong)") == [":deskline 904 * :SASL authentication failed"])
            #expect(try await client.irc("AUTHENTICATE PLAIN") == ["AUTHENTICATE +"])
            #expect(try await client.irc("AUTHENTICATE " + String(repeating: "A", count: 401)) == [":deskline 905 * :SASL message too long"])
            #expect(try await client.irc("AUTHENTICATE PLAIN") == ["AUTHENTICATE +"])
            // A message of exactly 400 bytes continues; `+` ends it.
            let long = Data("\0amy@acme.test\0\(TestServer.password)\(String(repeating: "x", count: 264))".utf8).base64EncodedString()
            #expect(long.utf8.count == 400)
            #expect(try await client.irc("AUTHENTICATE \(long)") == [])
            #expect(try await client.irc("AUTHENTICATE +") == [":deskline 904 * :SASL authentication failed"])
            // Chunks of 400 that never end fail once past any login's length.
            #expect(try await client.irc("AUTHENTICATE PLAIN") == ["AUTHENTICATE +"])
            for _ in 1...4 { #expect(try await client.irc("AUTHENTICATE " + String(repeating: "A", count: 400)) == []) }
            #expect(try await client.irc("AUTHENTICATE " + String(repeating: "A", count: 400)) == [":deskline 904 * :SASL authentication failed: the message is too long"])
            #expect(try await client.irc("AUTHENTICATE PLAIN") == ["AUTHENTICATE +"])
            let right = Data("amy@acme.test\0amy@acme.test\0\(TestServer.password)".utf8).base64EncodedString()
            let ok = try await client.irc("AUTHENTICATE \(right)")
            #expect(ok.last == ":deskline 903 * :SASL authentication successful")
            #expect(try await client.irc("AUTHENTICATE PLAIN") == [":deskline 907 * :You have already authenticated"])
            try await client.send("NICK a")
            try await client.send("USER a 0 * :a")
            let welcome = try await client.irc("CAP END")
            #expect(welcome.first == ":deskline 001 Amy_Agent :Welcome to the Acme Inc helpdesk, Amy Agent (Amy_Agent)")
            await client.close()
        }
    }

    @Test func commandsBeforeRegistrationAreRefusedWith451() async throws {
        try await withServer { server in
            let client = try await server.ircConnect()
            #expect(try await client.irc("JOIN #1001") == [":deskline 451 * :You have not registered: log in with SASL PLAIN or PASS <email>:<password>"])
            #expect(try await client.irc("PRIVMSG Deskline :TICKETS") == [":deskline 451 * :You have not registered: log in with SASL PLAIN or PASS <email>:<password>"])
            #expect(try await client.irc("CAP FOO") == [":deskline 410 * FOO :Invalid CAP command"])
            #expect(try await client.irc("CAP REQ :sasl chghost") == [":deskline CAP * NAK :sasl chghost"])
            #expect(try await client.irc("CAP LIST") == [":deskline CAP * LIST :"])
            await client.close()
        }
    }

    @Test func afterRegistrationNickUserAndPassCannotChangeTheIdentity() async throws {
        try await withServer { server in
            let (client, _) = try await server.ircLogin("ann@acme.test")
            #expect(try await client.irc("NICK Ada_Admin") == [":deskline 447 Ann_Customer :Your nick comes from your name in the helpdesk (Ann_Customer); it cannot be changed here"])
            #expect(try await client.irc("PASS ada@acme.test:x") == [":deskline 462 Ann_Customer :You may not reregister"])
            #expect(try await client.irc("USER a 0 * :b") == [":deskline 462 Ann_Customer :You may not reregister"])
            #expect(try await client.irc("WHOIS Ann_Customer").first == ":deskline 311 Ann_Customer Ann_Customer u1 acme * :Ann_Customer")
            try await client.send("QUIT :bye")
            #expect(try await client.readUntilClosed() == ["ERROR :Closing link: Ann_Customer (Quit: bye)"])
        }
    }

    @Test func badLinesGetIRCErrorsAndTheSessionSurvives() async throws {
        try await withServer(configure: { $0.limits.maxLineBytes = 512 }) { server in
            let (client, _) = try await server.ircLogin("amy@acme.test")
            try await client.send("PRIVMSG #1001 :" + String(repeating: "x", count: 600))
            #expect(try await client.readLine() == ":deskline 417 Amy_Agent :Input line was too long (more than 512 bytes); it was discarded")
            try await client.sendRaw(Array("PRIVMSG #1001 :\u{FF}\r\n".utf8.dropLast(3)) + [0xFF, 0x0D, 0x0A])
            #expect(try await client.readLine() == ":deskline FAIL * INVALID_UTF8 :The line is not valid UTF-8; it was discarded")
            #expect(try await client.irc("FOO bar") == [":deskline 421 Amy_Agent FOO :Unknown command (/msg Deskline HELP lists the helpdesk's commands)"])
            await client.close()
        }
    }

    @Test func aConnectionThatNeverLogsInIsClosedWithAnIRCError() async throws {
        try await withServer(configure: { $0.limits.registrationTimeoutSeconds = 0.3 }) { server in
            let client = try await server.ircConnect()
            try await client.send("NICK slow")
            #expect(try await client.readUntilClosed() == ["ERROR :Closing link: registration timed out (no login)"])
        }
    }

    @Test func nicksAreUniqueInATenantAndStableForTheUser() {
        let directory = NickDirectory()
        func user(_ id: String, _ name: String) -> User {
            User(id: UserID(unchecked: id), tenantId: TenantID(unchecked: "t"), email: "\(id)@t", displayName: name, role: .agent,
                 passwordHash: PasswordHash(algorithm: "scrypt", n: 2, r: 1, p: 1, salt: "", hash: ""), customerId: nil, createdAt: Date())
        }
        let tenant = TenantID(unchecked: "t")
        directory.load([user("u10", "Amy Agent"), user("u2", "Amy  Agent!"), user("u3", "Deskline"), user("u4", "42 Zoë")], in: tenant)
        #expect(directory.nick(of: UserID(unchecked: "u2"), named: "", in: tenant) == "Amy_Agent")
        #expect(directory.nick(of: UserID(unchecked: "u10"), named: "", in: tenant) == "Amy_Agent10")
        #expect(directory.nick(of: UserID(unchecked: "u3"), named: "", in: tenant) == "Deskline3")
        #expect(directory.nick(of: UserID(unchecked: "u4"), named: "", in: tenant) == "_42_Zo")
        #expect(directory.user(withNick: "amy_agent10", in: tenant) == UserID(unchecked: "u10"))
        // A user the directory has not seen gets a nick that is free.
        #expect(directory.nick(of: UserID(unchecked: "u11"), named: "Amy Agent", in: tenant) == "Amy_Agent11")
    }
}
