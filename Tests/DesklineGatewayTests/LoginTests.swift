import DesklineCore
import Testing

@Suite struct LoginTests {
    static let loginFailed = "ERR LOGIN LOGIN_FAILED :" + DesklineError.loginFailed.message

    @Test func greetingIsAnEvent() async throws {
        try await withServer { server in
            let client = try await server.connect()
            let hello = try await client.readLine()
            #expect(hello?.hasPrefix("EVENT HELLO deskline ") == true)
            await client.close()
        }
    }

    @Test func customerLogsInAndSeesOwnProfile() async throws {
        try await withServer { server in
            let client = try await server.guest()
            #expect(try await client.command("LOGIN ann@acme.test \(TestServer.password)")
                    == ["OK LOGIN customer acme u1 :Welcome, Ann Customer (Acme Inc)"])
            #expect(try await client.command("ME") == [
                "RPL ME tenant :acme", "RPL ME tenant-name :Acme Inc", "RPL ME user :u1", "RPL ME name :Ann Customer",
                "RPL ME email :ann@acme.test", "RPL ME role :customer", "RPL ME customer :c1",
                "RPL ME customer-name :Ann Customer", "RPL ME phone :+1 555 0101", "RPL ME status :active",
                "OK ME :End of ME",
            ])
            await client.close()
        }
    }

    /// Every failed LOGIN is answered no sooner than the configured delay after it started,
    /// whether the account exists or not (a floor, not a speed: the delay is the behaviour).
    @Test func failedLoginsAreAnsweredAfterTheFailureDelayWhateverTheAccount() async throws {
        try await withServer(configure: { $0.limits.loginFailureDelayMilliseconds = 400 }) { server in
            let client = try await server.guest()
            for attempt in ["nobody@nowhere.test wrong password", "ann@acme.test wrong password", "acme/amy@acme.test nope"] {
                let started = ContinuousClock.now
                #expect(try await client.command("LOGIN \(attempt)") == [Self.loginFailed])
                #expect(ContinuousClock.now - started >= .milliseconds(400), "\(attempt)")
            }
            // A success is not held back by it (it is answered once the password is checked).
            #expect(try await client.command("LOGIN ann@acme.test \(TestServer.password)").last?.hasPrefix("OK LOGIN") == true)
            await client.close()
        }
    }

    @Test func agentProfileShowsUserAndTenantOnly() async throws {
        try await withServer { server in
            let client = try await server.login("amy@acme.test")
            let reply = try await client.command("ME")
            #expect(reply.contains("RPL ME role :agent"))
            #expect(reply.contains("RPL ME tenant-name :Acme Inc"))
            #expect(!reply.contains { $0.hasPrefix("RPL ME customer") })
            await client.close()
        }
    }

    @Test func passwordMayContainSpacesWithOrWithoutColon() async throws {
        try await withServer { server in
            // TestServer.password is "correct horse battery".
            let a = try await server.guest()
            #expect(try await a.command("LOGIN amy@acme.test correct horse battery").first?.hasPrefix("OK LOGIN agent") == true)
            let b = try await server.guest()
            #expect(try await b.command("LOGIN ada@acme.test :correct horse battery").first?.hasPrefix("OK LOGIN admin") == true)
            let c = try await server.guest()
            #expect(try await c.command("LOGIN ada@acme.test correct  horse battery") == [Self.loginFailed])
            for client in [a, b, c] { await client.close() }
        }
    }

    @Test func wrongPasswordAndUnknownEmailGetTheSameReply() async throws {
        try await withServer { server in
            let client = try await server.guest()
            let wrong = try await client.command("LOGIN ann@acme.test not the password")
            let unknown = try await client.command("LOGIN nobody@acme.test \(TestServer.password)")
            let otherTenant = try await client.command("LOGIN globex/ann@acme.test \(TestServer.password)")
            #expect(wrong == [Self.loginFailed])
            #expect(unknown == wrong)
            #expect(otherTenant == wrong)
            // The connection survives failed logins.
            #expect(try await client.command("LOGIN ann@acme.test \(TestServer.password)").first?.hasPrefix("OK LOGIN") == true)
            await client.close()
        }
    }

    @Test func sessionStaysBoundToItsLogin() async throws {
        try await withServer { server in
            let client = try await server.login("ann@acme.test")
            #expect(try await client.command("LOGIN gus@globex.test \(TestServer.password)")
                    == ["ERR LOGIN ALREADY_LOGGED_IN :You are already logged in. QUIT and reconnect to log in as someone else."])
            // Tags cannot change who the session is.
            let me = try await client.command("@tenant=globex;user=u1;customer=c1 ME")
            #expect(me.contains("RPL ME tenant :acme"))
            #expect(me.contains("RPL ME email :ann@acme.test"))
            await client.close()
        }
    }

    @Test func passwordChangedByTheOperatorWorksOnTheRunningServer() async throws {
        try await withServer { server in
            try await server.accounts.setPassword(in: TenantID(rawValue: "acme")!, email: "amy@acme.test", password: "brand new secret")
            let client = try await server.guest()
            #expect(try await client.command("LOGIN amy@acme.test \(TestServer.password)") == [Self.loginFailed])
            #expect(try await client.command("LOGIN amy@acme.test brand new secret").first?.hasPrefix("OK LOGIN agent") == true)
            await client.close()
        }
    }

    /// Attempts sent at the same moment all pass the limit's first check, but a right password
    /// whose check ends after the limit was reached by the others is not let in: no more guesses
    /// than the limit allows can succeed, however they are timed.
    @Test func aRightPasswordAfterTheLimitWasReachedMeanwhileIsThrottled() async throws {
        try await withServer(configure: {
            $0.limits.loginFailuresPerAccount = 4
            $0.limits.loginFailuresPerAddress = 1000
            // Checks slow enough (about 0.1 s each here, more on a loaded machine) that the right
            // password, sent once the four wrong ones are being checked, passes the first check
            // (fewer than four failures yet) and waits for its check behind them.
            $0.passwordHashing = PasswordHashingCost(n: 32768, r: 8, p: 1)
        }) { server in
            var clients: [TestClient] = []
            for _ in 0..<5 { clients.append(try await server.guest()) }
            let taken = server.pool.checksTaken
            for client in clients.prefix(4) { try await client.send("LOGIN ann@acme.test wrong password") }
            // (Not a fixed sleep: on a loaded machine the wrong ones were not all read by then,
            // and the right password could be checked first.)
            let deadline = ContinuousClock.now + .seconds(10)
            while server.pool.checksTaken - taken < 4, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(1)) }
            try await clients[4].send("LOGIN ann@acme.test \(TestServer.password)")
            var replies: [String] = []
            for client in clients { replies.append(try await client.readReply().last ?? "") }
            #expect(replies.prefix(4).allSatisfy { $0.hasPrefix("ERR LOGIN LOGIN_FAILED") }, "\(replies)")
            #expect(replies[4].hasPrefix("ERR LOGIN THROTTLED"), "\(replies)")
        }
    }

}
