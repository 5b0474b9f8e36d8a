import Testing

@Suite struct ProtocolBehaviourTests {
    @Test func helpListsOnlyWhatTheCallerMayUse() async throws {
        try await withServer { server in
            let guest = try await server.guest()
            let before = try await guest.command("HELP")
            #expect(before.map { $0.split(separator: " ")[2] } == ["HELP", "LOGIN", "PING", "PONG", "QUIT", "5"])
            #expect(before.last == "OK HELP 5 :5 commands available before LOGIN")

            let customer = try await server.login("ann@acme.test")
            let after = try await customer.command("help")
            #expect(after.map { $0.split(separator: " ")[2] } == ["HELP", "ME", "PING", "PONG", "QUIT", "TICKETS", "NEW", "SHOW",
                                                                  "HISTORY", "MSG", "CLOSE", "CALL", "CALLS", "PROFILE", "PASSWD",
                                                                  "NOTIFICATIONS", "READ", "17"])
            #expect(after.last == "OK HELP 17 :17 commands available as customer")

            let agent = try await server.login("amy@acme.test")
            let staff = try await agent.command("HELP")
            #expect(staff.map { $0.split(separator: " ")[2] } == ["HELP", "ME", "PING", "PONG", "QUIT", "SHOW", "HISTORY", "MSG", "PASSWD",
                                                                  "QUEUE", "JOIN", "PART", "NOTE", "ASSIGN", "STATUS", "CALLS", "CALL",
                                                                  "AGENTS", "AWAY", "BACK", "NOTIFICATIONS", "READ", "22"])
            let admin = try await server.login("ada@acme.test")
            #expect(try await admin.command("HELP").last == "OK HELP 23 :23 commands available as admin")
            await admin.close()
            await agent.close()
            #expect(try await customer.command("HELP login") == ["ERR HELP NOT_FOUND :No command 'LOGIN' is available to you. Type HELP for the list."])
            #expect(try await customer.command("HELP me") == [
                "RPL HELP ME :ME - Show your profile: your account, your helpdesk and, for customers, your customer record.",
                "OK HELP ME :End of HELP",
            ])
            await guest.close()
            await customer.close()
        }
    }

    @Test func commandsNeedingLoginAreRefusedBeforeIt() async throws {
        try await withServer { server in
            let client = try await server.guest()
            #expect(try await client.command("ME") == ["ERR ME NOT_LOGGED_IN :Log in first: LOGIN <email> <password>. Type HELP for what works before login."])
            await client.close()
        }
    }

    @Test func unknownCommandPointsToHelp() async throws {
        try await withServer { server in
            let client = try await server.login("amy@acme.test")
            #expect(try await client.command("FROB #1") == ["ERR FROB UNKNOWN_COMMAND :Unknown command 'FROB'. Type HELP for the commands you can use."])
            await client.close()
        }
    }

    @Test func missingAndExtraParametersShowUsage() async throws {
        try await withServer { server in
            let client = try await server.guest()
            #expect(try await client.command("LOGIN ann@acme.test") == ["ERR LOGIN NEED_PARAMS :Not enough parameters. Usage: LOGIN <email> <password>"])
            #expect(try await client.command("HELP ME TOO") == ["ERR HELP TOO_MANY_PARAMS :Too many parameters. Usage: HELP [<command>]"])
            await client.close()
        }
    }

    @Test func everyReplyLineCarriesTheLabel() async throws {
        try await withServer { server in
            let client = try await server.login("ann@acme.test")
            let reply = try await client.command("@label=q7 ME")
            #expect(reply.count == 11)
            #expect(reply.allSatisfy { $0.hasPrefix("@label=q7 ") })
            #expect(reply.last == "@label=q7 OK ME :End of ME")
            #expect(try await client.command("@label=x\\sy NOPE") == [#"@label=x\sy ERR NOPE UNKNOWN_COMMAND :Unknown command 'NOPE'. Type HELP for the commands you can use."#])
            #expect(try await client.command("@label=p PING :a b") == ["@label=p OK PING :a b"])
            await client.close()
        }
    }

    @Test func pipelinedCommandsAreAnsweredInOrder() async throws {
        try await withServer { server in
            let client = try await server.guest()
            try await client.sendRaw(Array("@label=1 PING a\r\n@label=2 LOGIN ann@acme.test correct horse battery\n@label=3 ME\n@label=4 PING b\n".utf8))
            var labels: [String] = []
            for _ in 0..<4 {
                let reply = try await client.readReply()
                labels.append(String(reply.last!.prefix(while: { $0 != " " })))
            }
            #expect(labels == ["@label=1", "@label=2", "@label=3", "@label=4"])
            await client.close()
        }
    }

    @Test func overlongLineIsRefusedAndTheConnectionSurvives() async throws {
        try await withServer(configure: { $0.limits.maxLineBytes = 512 }) { server in
            let client = try await server.guest()
            try await client.sendRaw(Array(repeating: UInt8(ascii: "A"), count: 100_000) + Array("\n".utf8))
            #expect(try await client.readReply() == ["ERR * LINE_TOO_LONG :Line longer than 512 bytes; it was discarded."])
            #expect(try await client.command("PING still-here") == ["OK PING :still-here"])
            await client.close()
        }
    }

    @Test func invalidUTF8AndGarbageGetErrorLines() async throws {
        try await withServer { server in
            let client = try await server.guest()
            try await client.sendRaw([0x50, 0x49, 0x4E, 0x47, 0x20, 0xFF, 0xFE, 0x0A])
            #expect(try await client.readReply() == ["ERR * INVALID_UTF8 :The line is not valid UTF-8; it was discarded."])
            #expect(try await client.command("@label=only-tags") == ["@label=only-tags ERR * NO_COMMAND :The line has no command. Type HELP for the list of commands."])
            // Control characters are never echoed raw: ESC comes back as '?'.
            #expect(try await client.command("\u{1B}[2J") == ["ERR * INVALID_COMMAND :'?[2J' is not a valid command name. Type HELP for the list of commands."])
            #expect(try await client.command("@label=n\u{1}1 PING a\u{0}b") == ["@label=n?1 ERR * NUL_BYTE :The line contains a NUL byte; it was discarded."])
            #expect(try await client.command("PING a\u{7F}b\u{9B}c") == ["OK PING :a?b?c"])
            #expect(try await client.command("@label= PING") == ["ERR PING BAD_LABEL :The label tag must be 1-64 bytes."])
            try await client.send("")
            try await client.send("   ")
            #expect(try await client.command("PING ok") == ["OK PING :ok"])
            await client.close()
        }
    }

    @Test func scriptedClientGetsEveryReplyBeforeTheConnectionCloses() async throws {
        // printf 'LOGIN ...\nME\nQUIT\n' | nc -N: the client half-closes right after sending.
        try await withServer { server in
            let client = try await server.connect()
            try await client.sendRaw(Array("LOGIN ann@acme.test correct horse battery\nME\nPING last".utf8))
            await client.finishSending()
            let all = try await client.readUntilClosed()
            #expect(all.first?.hasPrefix("EVENT HELLO") == true)
            #expect(all.contains("OK LOGIN customer acme u1 :Welcome, Ann Customer (Acme Inc)"))
            #expect(all.contains("OK ME :End of ME"))
            #expect(all.last == "OK PING :last")
        }
    }

    @Test func quitRepliesThenCloses() async throws {
        try await withServer { server in
            let client = try await server.guest()
            try await client.send("QUIT :bye")
            #expect(try await client.readUntilClosed() == ["OK QUIT :Goodbye"])
        }
    }

    @Test func registrationTimeoutClosesIdleGuests() async throws {
        try await withServer(configure: { $0.limits.registrationTimeoutSeconds = 0.4 }) { server in
            let client = try await server.guest()
            let rest = try await client.readUntilClosed(timeout: .seconds(5))
            #expect(rest == ["EVENT ERROR REGISTRATION_TIMEOUT :No LOGIN within 0.4 seconds; closing the connection."])
        }
    }

    @Test func loggedInSessionsAreNotHitByTheRegistrationTimeout() async throws {
        // Generous: on a loaded 2-core CI machine connecting and logging in can take a while.
        try await withServer(configure: { $0.limits.registrationTimeoutSeconds = 3 }) { server in
            let client = try await server.login("amy@acme.test")
            try await Task.sleep(for: .milliseconds(3500))
            #expect(try await client.command("PING alive") == ["OK PING :alive"])
            await client.close()
        }
    }

    @Test func idleSessionIsPingedAndADeadPeerDropped() async throws {
        try await withServer(configure: {
            $0.limits.pingIntervalSeconds = 0.4
            $0.limits.pingTimeoutSeconds = 3 // room for a loaded CI machine to answer in time
        }) { server in
            let client = try await server.login("amy@acme.test")
            let ping = try #require(try await client.readLine(timeout: .seconds(5)))
            #expect(ping.hasPrefix("EVENT PING :deskline-"))
            // Answering keeps the session.
            #expect(try await client.command("PONG \(ping.split(separator: ":").last!)").first?.hasPrefix("OK PONG") == true)
            // Not answering the next one drops it.
            let next = try await client.readLine(timeout: .seconds(5))
            #expect(next?.hasPrefix("EVENT PING") == true)
            let rest = try await client.readUntilClosed(timeout: .seconds(5))
            #expect(rest == ["EVENT ERROR PING_TIMEOUT :No reply to PING within 3 seconds; closing the connection."])
        }
    }

    @Test func sessionsLeftAfterOthersCloseAreStillPinged() async throws {
        // One ticker per event loop keeps time for all its sessions: a session that ends hands
        // its slot to another, which must go on being ticked, as must every session after it.
        try await withServer(configure: {
            $0.limits.pingIntervalSeconds = 0.4
            $0.limits.pingTimeoutSeconds = 30
        }) { server in
            var clients: [TestClient] = []
            for _ in 0..<6 { clients.append(try await server.login("amy@acme.test")) }
            for client in clients.prefix(3) { await client.close() }
            for client in clients.dropFirst(3) {
                let ping = try await client.readLine(timeout: .seconds(5))
                #expect(ping?.hasPrefix("EVENT PING :deskline-") == true)
                await client.close()
            }
            // A session that logs in after every other one closed is ticked as well.
            let late = try await server.login("amy@acme.test")
            let ping = try await late.readLine(timeout: .seconds(5))
            #expect(ping?.hasPrefix("EVENT PING :deskline-") == true)
            await late.close()
        }
    }

    @Test func shutdownTellsEverySessionAndStopsAccepting() async throws {
        let server = try await TestServer.start()
        let a = try await server.login("ann@acme.test")
        let b = try await server.login("amy@acme.test")
        let guest = try await server.guest()
        try await server.stop()
        for client in [a, b, guest] {
            #expect(try await client.readUntilClosed() == ["EVENT SHUTDOWN :The server is shutting down. Please reconnect later."])
        }
        await #expect(throws: (any Error).self) { try await TestClient.connect(port: server.port) }
    }
}
