import DesklineCore
import DesklineGateway
import DesklinePostgres
import DesklinePostgresTesting
import Foundation
import Logging
import PostgresNIO
import Testing

/// Presence (AGENTS, AWAY, BACK, IRC WHOIS/AWAY) and the failed-login limits shared by the nodes
/// of one PostgreSQL schema (docs/ARCHITECTURE.md, "Several nodes"; docs/PROTOCOL.md, AGENTS and
/// "Logging in"), over real sockets with two in-process nodes. Seeded as ``TestServer``'s data:
/// acme's staff are Abe (agent), Ada (admin) and Amy (agent, u2).
///
/// A login is visible on the other node once its `OK LOGIN` is out, so that is asserted at once; a
/// logout is written a moment later, so that is waited for, with a generous deadline.
struct ClusterPresenceTests {
    // MARK: Sessions

    @Test func sessionsOnEitherNodeCountInAgentsOnBoth() async throws {
        try await withTwoNodes { a, b, _ in
            let adaOnB = try await b.login("ada@acme.test")
            let abeOnA = try await a.login("abe@acme.test")
            try await adaOnB.expectAgent("amy@acme.test", "offline 0 :")

            // Right after A's OK LOGIN, B counts the session.
            let amyOnA = try await a.login("amy@acme.test")
            try await adaOnB.expectAgent("amy@acme.test", "online 1 :")
            #expect(try await adaOnB.command("AGENTS").last == "OK AGENTS 3 :3 of 3 online")

            // A second session on B: both nodes count two.
            let amyOnB = try await b.login("amy@acme.test")
            try await adaOnB.expectAgent("amy@acme.test", "online 2 :")
            try await abeOnA.expectAgent("amy@acme.test", "online 2 :")

            // QUIT on A: B counts one (a logout is written asynchronously).
            #expect(try await amyOnA.command("QUIT") == ["OK QUIT :Goodbye"])
            try await adaOnB.expectAgent("amy@acme.test", "online 1 :", waitingWhile: "online 2 :")
            try await abeOnA.expectAgent("amy@acme.test", "online 1 :")

            // The last session ends on B: A sees her offline.
            #expect(try await amyOnB.command("QUIT") == ["OK QUIT :Goodbye"])
            try await abeOnA.expectAgent("amy@acme.test", "offline 0 :", waitingWhile: "online 1 :")
            try await adaOnB.expectAgent("amy@acme.test", "offline 0 :")
            #expect(try await abeOnA.command("AGENTS").last == "OK AGENTS 3 :2 of 3 online")

            // A session that ends by closing the connection (no QUIT) is counted out too.
            let amyAgain = try await a.login("amy@acme.test")
            try await adaOnB.expectAgent("amy@acme.test", "online 1 :")
            await amyAgain.close()
            try await adaOnB.expectAgent("amy@acme.test", "offline 0 :", waitingWhile: "online 1 :")
            for client in [adaOnB, abeOnA] { await client.close() }
        }
    }

    // MARK: Away

    @Test func awayIsSharedAndGoesOnlyWithTheUsersLastSessionOnAnyNode() async throws {
        try await withTwoNodes { a, b, _ in
            let adaOnB = try await b.login("ada@acme.test")
            let amyOnA = try await a.login("amy@acme.test")

            // AWAY on A shows on B, with its reason.
            #expect(try await amyOnA.command("AWAY on the phone") == ["OK AWAY :on the phone"])
            try await adaOnB.expectAgent("amy@acme.test", "away 1 :on the phone")

            // A second session on B keeps it (she still has one on A).
            let amyOnB = try await b.login("amy@acme.test")
            try await adaOnB.expectAgent("amy@acme.test", "away 2 :on the phone")
            try await amyOnA.expectAgent("amy@acme.test", "away 2 :on the phone")

            // BACK on B clears it for A too.
            #expect(try await amyOnB.command("BACK") == ["OK BACK :You are back"])
            try await amyOnA.expectAgent("amy@acme.test", "online 2 :")
            try await adaOnB.expectAgent("amy@acme.test", "online 2 :")

            // Her session on A ends while she still has one on B: the message stays.
            #expect(try await amyOnA.command("AWAY at lunch") == ["OK AWAY :at lunch"])
            try await adaOnB.expectAgent("amy@acme.test", "away 2 :at lunch")
            #expect(try await amyOnA.command("QUIT") == ["OK QUIT :Goodbye"])
            try await adaOnB.expectAgent("amy@acme.test", "away 1 :at lunch", waitingWhile: "away 2 :at lunch")

            // The other way round: away set on B, her session on B ends while she has one on A.
            let amyOnA2 = try await a.login("amy@acme.test")
            try await adaOnB.expectAgent("amy@acme.test", "away 2 :at lunch")
            #expect(try await amyOnB.command("AWAY in a meeting") == ["OK AWAY :in a meeting"])
            #expect(try await amyOnB.command("QUIT") == ["OK QUIT :Goodbye"])
            try await adaOnB.expectAgent("amy@acme.test", "away 1 :in a meeting", waitingWhile: "away 2 :in a meeting")

            // Her last session (on A) ends: when she is back, on either node, she is not away.
            #expect(try await amyOnA2.command("QUIT") == ["OK QUIT :Goodbye"])
            try await adaOnB.expectAgent("amy@acme.test", "offline 0 :", waitingWhile: "away 1 :in a meeting")
            let amyOnB2 = try await b.login("amy@acme.test")
            try await adaOnB.expectAgent("amy@acme.test", "online 1 :")
            #expect(try await amyOnB2.command("QUIT") == ["OK QUIT :Goodbye"])
            try await adaOnB.expectAgent("amy@acme.test", "offline 0 :", waitingWhile: "online 1 :")
            let amyOnA3 = try await a.login("amy@acme.test")
            try await adaOnB.expectAgent("amy@acme.test", "online 1 :")
            for client in [adaOnB, amyOnA3] { await client.close() }
        }
    }

    /// Amy's only session ends and she logs in again while the node's presence writer is still
    /// busy with an earlier change (held up here by a lock on the node's row, as a slow or briefly
    /// unreachable database would): her last session did end, so her away message goes, as it
    /// does on one node.
    @Test func awayGoesWithTheLastSessionEvenWhenTheWriterIsBehind() async throws {
        try await withTwoNodes { a, b, settings in
            let adaOnB = try await b.login("ada@acme.test")
            let adaOnA = try await a.login("ada@acme.test")
            let amyOnA = try await a.login("amy@acme.test")
            #expect(try await amyOnA.command("AWAY on the phone") == ["OK AWAY :on the phone"])
            try await adaOnB.expectAgent("amy@acme.test", "away 1 :on the phone")
            var abe: TestClient?
            var amyAgain: TestClient?
            try await holdingTheNodeRowOf(user: "u2", tenant: "acme", settings) {
                // A change for A's writer to be busy with: Abe logs in on A (his OK waits for it).
                let abeOnA = try await TestClient.connect(port: a.port)
                abe = abeOnA
                _ = try await abeOnA.readLine()
                try await abeOnA.send("LOGIN abe@acme.test \(TestServer.password)")
                try await adaOnA.expectAgent("abe@acme.test", "online 1 :", waitingWhile: "offline 0 :")
                // Amy's only session ends (A counts her out at once)...
                #expect(try await amyOnA.command("QUIT") == ["OK QUIT :Goodbye"])
                try await adaOnA.expectAgent("amy@acme.test", "offline 0 :", waitingWhile: "away 1 :on the phone")
                // ...and a new one begins.
                let amyOnA2 = try await TestClient.connect(port: a.port)
                amyAgain = amyOnA2
                _ = try await amyOnA2.readLine()
                try await amyOnA2.send("LOGIN amy@acme.test \(TestServer.password)")
                // (Once A counts it; what A shows of her away message meanwhile is not the point.)
                let counted = try await adaOnA.agent("amy@acme.test", until: { !$0.hasPrefix("offline ") })
                #expect(counted.hasSuffix(" 1 :on the phone") || counted == "online 1 :", "\(counted)")
            }
            // The lock is gone: both logins are answered once their sessions are written.
            let abeOnA = try #require(abe)
            let amyOnA2 = try #require(amyAgain)
            #expect(try await abeOnA.readLine()?.hasPrefix("OK LOGIN ") == true)
            #expect(try await amyOnA2.readLine()?.hasPrefix("OK LOGIN ") == true)
            try await adaOnB.expectAgent("amy@acme.test", "online 1 :")
            try await adaOnA.expectAgent("amy@acme.test", "online 1 :")
            for client in [adaOnB, adaOnA, abeOnA, amyOnA2] { await client.close() }
        }
    }

    // MARK: Failed logins

    @Test func anAccountsFailedLoginsCountOnEveryNode() async throws {
        try await withTwoNodes(configure: {
            $0.limits.loginFailuresPerAccount = 3
            $0.limits.loginFailuresPerAddress = 1000
        }) { a, b, _ in
            var results: [String] = []
            for node in [a, b, a] { results.append(try await attempt(node, "ann@acme.test", "wrong password")) }
            // Past the limit, on either node, whatever the password (and the login's case).
            results.append(try await attempt(b, "ann@acme.test", TestServer.password))
            results.append(try await attempt(a, "ann@acme.test", "wrong password"))
            results.append(try await attempt(a, "ANN@acme.test", TestServer.password))
            #expect(results == ["LOGIN_FAILED", "LOGIN_FAILED", "LOGIN_FAILED", "THROTTLED", "THROTTLED", "THROTTLED"])
            // Another account of the same address is not held up.
            #expect(try await attempt(a, "amy@acme.test", TestServer.password) == "OK")
            #expect(try await attempt(b, "amy@acme.test", TestServer.password) == "OK")
            // The wait is what is left of the window (900 s by default) since the oldest failure.
            let line = try await attemptLine(b, "ann@acme.test", TestServer.password)
            #expect(line.hasPrefix("ERR LOGIN THROTTLED :Too many failed logins. Try again in "), "\(line)")
            let seconds = Int(line.components(separatedBy: "Try again in ").last?.prefix { $0.isNumber } ?? "")
            #expect(seconds.map { (450...901).contains($0) } == true, "\(line)")
        }
    }

    @Test func anAddresssFailedLoginsCountOnEveryNode() async throws {
        try await withTwoNodes(configure: {
            $0.limits.loginFailuresPerAddress = 3
            $0.limits.loginFailuresPerAccount = 1000
        }) { a, b, _ in
            let amyOnB = try await b.login("amy@acme.test")
            var results: [String] = []
            // Failures for different accounts, over several connections, on both nodes.
            results.append(try await attempt(a, "nobody1@acme.test", "wrong password"))
            results.append(try await attempt(b, "acme/nobody2@acme.test", "wrong password"))
            #expect(results == ["LOGIN_FAILED", "LOGIN_FAILED"])
            // A wrong current password to PASSWD counts toward the same limit (on B)...
            #expect(try await amyOnB.command("PASSWD wrong a much longer new password").last?.hasPrefix("ERR PASSWD WRONG_PASSWORD ") == true)
            // ...so the next attempt from this address is refused, on either node, for any account.
            results = []
            results.append(try await attempt(a, "ann@acme.test", TestServer.password))
            results.append(try await attempt(b, "abe@acme.test", TestServer.password))
            results.append(try await attempt(a, "nobody3@acme.test", "wrong password"))
            #expect(results == ["THROTTLED", "THROTTLED", "THROTTLED"])
            await amyOnB.close()
        }
    }

    @Test func aSuccessfulLoginOnOneNodeClearsTheAccountsFailuresOnEvery() async throws {
        try await withTwoNodes(configure: {
            $0.limits.loginFailuresPerAccount = 3
            $0.limits.loginFailuresPerAddress = 1000
        }) { a, b, _ in
            var results: [String] = []
            results.append(try await attempt(a, "amy@acme.test", "wrong password"))
            results.append(try await attempt(b, "amy@acme.test", "wrong password"))
            results.append(try await attempt(b, "amy@acme.test", TestServer.password))
            // Cleared: three more failures before the limit, spread over both nodes.
            for node in [a, b, a] { results.append(try await attempt(node, "amy@acme.test", "wrong password")) }
            results.append(try await attempt(b, "amy@acme.test", "wrong password"))
            results.append(try await attempt(a, "amy@acme.test", TestServer.password))
            #expect(results == ["LOGIN_FAILED", "LOGIN_FAILED", "OK", "LOGIN_FAILED", "LOGIN_FAILED", "LOGIN_FAILED", "THROTTLED", "THROTTLED"])
        }
    }

    // MARK: Nodes that stop

    @Test func theSessionsOfAStoppedNodeStopCounting() async throws {
        let postgres = try await TestPostgres.server()
        let settings = try await TestPostgres.freshSchema(postgres)
        let a = try await TestNode.start(settings, password: postgres.password)
        let b = try await TestNode.start(settings, password: postgres.password)
        var stoppedA = false
        do {
            try await TestServer.seed(a.accounts)
            let adaOnB = try await b.login("ada@acme.test")
            let amyOnA = try await a.login("amy@acme.test")
            #expect(try await amyOnA.command("AWAY on the phone") == ["OK AWAY :on the phone"])
            try await adaOnB.expectAgent("amy@acme.test", "away 1 :on the phone")
            await a.stop()
            stoppedA = true
            // Within the documented 15 s (a node not seen for 15 s no longer counts), if its
            // logouts were not written before it stopped.
            try await adaOnB.expectAgent("amy@acme.test", "offline 0 :", waitingWhile: "away 1 :on the phone", within: .seconds(25))
            // And when she comes back on B, the message of her session on A is gone.
            let amyOnB = try await b.login("amy@acme.test")
            try await adaOnB.expectAgent("amy@acme.test", "online 1 :")
            for client in [adaOnB, amyOnB, amyOnA] { await client.close() }
        } catch {
            if !stoppedA { await a.stop() }
            await b.stop()
            throw error
        }
        await b.stop()
    }

    /// A node whose store stops (no heartbeat, no presence written: a hung process, or one cut
    /// off from the database) while its gateway still holds a session: the other node stops
    /// counting that session within 15 s.
    @Test func aNodeThatStopsHeartbeatingStopsCounting() async throws {
        try await withTwoNodes { a, b, _ in
            let adaOnB = try await b.login("ada@acme.test")
            let amyOnA = try await a.login("amy@acme.test")
            try await adaOnB.expectAgent("amy@acme.test", "online 1 :")
            await a.silenceStore()
            try await adaOnB.expectAgent("amy@acme.test", "offline 0 :", waitingWhile: "online 1 :", within: .seconds(25))
            // (Her session on A itself goes on.)
            #expect(try await amyOnA.command("PING still") == ["OK PING :still"])
            for client in [adaOnB, amyOnA] { await client.close() }
        }
    }

    /// A node the others forgot (its heartbeat missing for a minute: what `beat()` on the other
    /// nodes then deletes is deleted here directly) writes its presence again at its next
    /// heartbeat; a user still logged in there is still away (nobody's last session ended).
    @Test func aForgottenNodeWritesItsPresenceAgainKeepingAwayMessages() async throws {
        try await withTwoNodes { a, b, settings in
            let adaOnB = try await b.login("ada@acme.test")
            let amyOnA = try await a.login("amy@acme.test")
            #expect(try await amyOnA.command("AWAY on the phone") == ["OK AWAY :on the phone"])
            try await adaOnB.expectAgent("amy@acme.test", "away 1 :on the phone")

            // What the other nodes' heartbeat deletes once A has not been seen for 60 s: A's
            // row in `nodes`, and the presence rows of nodes no longer there.
            try await forgetTheNodeOf(user: "u2", tenant: "acme", settings)

            // A's next heartbeat (every 5 s) finds it was forgotten and writes its rows again
            // (meanwhile B shows her offline).
            try await adaOnB.expectAgent("amy@acme.test", "away 1 :on the phone", waitingWhile: "offline 0 :", within: .seconds(15))
            try await amyOnA.expectAgent("amy@acme.test", "away 1 :on the phone")
            for client in [adaOnB, amyOnA] { await client.close() }
        }
    }

    // MARK: IRC

    @Test func ircWhoisAndAwaySeeTheOtherNode() async throws {
        try await withTwoNodes(configure: {
            $0.irc.enabled = true
            $0.irc.port = 0
        }) { a, b, _ in
            let amyOnA = try await a.login("amy@acme.test")
            let adaOnB = try await ircLogin(b, "ada@acme.test")
            #expect(try await adaOnB.irc("WHOIS Amy_Agent") == [
                ":deskline 311 Ada_Admin Amy_Agent u2 acme * :Amy_Agent", ":deskline 312 Ada_Admin Amy_Agent deskline :Deskline",
                ":deskline 318 Ada_Admin Amy_Agent :End of /WHOIS list."])

            // AWAY on A (native) shows in WHOIS on B (IRC).
            #expect(try await amyOnA.command("AWAY on the phone") == ["OK AWAY :on the phone"])
            #expect(try await adaOnB.irc("WHOIS Amy_Agent") == [
                ":deskline 311 Ada_Admin Amy_Agent u2 acme * :Amy_Agent", ":deskline 312 Ada_Admin Amy_Agent deskline :Deskline",
                ":deskline 301 Ada_Admin Amy_Agent :on the phone", ":deskline 318 Ada_Admin Amy_Agent :End of /WHOIS list."])

            // IRC AWAY on B shows in AGENTS on A; AWAY without a reason clears it.
            #expect(try await adaOnB.irc("AWAY :in a meeting") == [":deskline 306 Ada_Admin :You have been marked as being away"])
            try await amyOnA.expectAgent("ada@acme.test", "away 1 :in a meeting")
            #expect(try await adaOnB.irc("AWAY") == [":deskline 305 Ada_Admin :You are no longer marked as being away"])
            try await amyOnA.expectAgent("ada@acme.test", "online 1 :")

            // Amy's only session ends on A: WHOIS on B says she is not online.
            #expect(try await amyOnA.command("QUIT") == ["OK QUIT :Goodbye"])
            let deadline = ContinuousClock.now + .seconds(10)
            var whois = try await adaOnB.irc("WHOIS Amy_Agent")
            while whois.first?.contains(" 311 ") == true, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(100))
                whois = try await adaOnB.irc("WHOIS Amy_Agent")
            }
            #expect(whois == [":deskline 401 Ada_Admin Amy_Agent :No such nick/channel (not online)",
                              ":deskline 318 Ada_Admin Amy_Agent :End of /WHOIS list."])
            await adaOnB.close()
        }
    }

    /// Staff following a ticket on one node are members of its channel for IRC sessions on the
    /// other: JOIN and PART as they start and stop, and in NAMES.
    @Test func ircChannelMembersIncludeFollowersOnTheOtherNode() async throws {
        try await withTwoNodes(configure: {
            $0.irc.enabled = true
            $0.irc.port = 0
        }) { a, b, _ in
            let ann = try await a.login("ann@acme.test")
            #expect(try await ann.command("NEW :Printer").last?.hasPrefix("OK NEW #1001 ") == true)
            let abeOnB = try await ircLogin(b, "abe@acme.test")
            _ = try await abeOnB.irc("JOIN #1001")
            let amyOnA = try await a.login("amy@acme.test")
            #expect(try await amyOnA.command("JOIN #1001").last?.hasPrefix("OK JOIN #1001") == true)
            _ = try await abeOnB.expectLine(startingWith: ":Amy_Agent!u2@acme JOIN #1001")
            let names = try await abeOnB.irc("NAMES #1001")
            #expect(names.contains { $0.contains(" 353 ") && $0.contains("@Amy_Agent") }, "\(names)")

            // Her only session leaves the ticket: PART on B.
            _ = try await amyOnA.command("PART #1001")
            _ = try await abeOnB.expectLine(startingWith: ":Amy_Agent!u2@acme PART #1001")
            #expect(try await abeOnB.irc("NAMES #1001").allSatisfy { !$0.contains("Amy_Agent") })

            // Following again, then her node's session ends: PART on B too.
            _ = try await amyOnA.command("JOIN #1001")
            _ = try await abeOnB.expectLine(startingWith: ":Amy_Agent!u2@acme JOIN #1001")
            _ = try await amyOnA.command("QUIT")
            _ = try await abeOnB.expectLine(startingWith: ":Amy_Agent!u2@acme PART #1001")
            await abeOnB.close()
        }
    }
}

// MARK: - Helpers

/// One LOGIN on a new connection to `node`: the reply's terminal line (the connection is closed
/// after it).
private func attemptLine(_ node: TestNode, _ login: String, _ password: String) async throws -> String {
    let client = try await TestClient.connect(port: node.port)
    _ = try await client.readLine()
    try await client.send("LOGIN \(login) \(password)")
    let reply = try await client.readReply()
    await client.close()
    return reply.last ?? ""
}

/// One LOGIN on a new connection to `node`: "OK", or the error code.
private func attempt(_ node: TestNode, _ login: String, _ password: String) async throws -> String {
    let line = try await attemptLine(node, login, password)
    if line.hasPrefix("OK LOGIN ") { return "OK" }
    let words = line.split(separator: " ")
    return words.count > 2 && words[0] == "ERR" ? String(words[2]) : line
}

/// An IRC session on `node`'s IRC listener, registered with PASS (returned after the welcome).
private func ircLogin(_ node: TestNode, _ login: String) async throws -> TestClient {
    let port = try #require(node.server.address(.irc, tls: false)?.port, "the node has no IRC listener")
    let client = try await TestClient.connect(port: port)
    try await client.send("PASS \(login):\(TestServer.password)")
    try await client.send("CAP LS 302")
    try await client.send("NICK guest")
    try await client.send("USER guest 0 * :A test client")
    try await client.send("CAP END")
    let lines = try await client.sync()
    #expect(lines.contains { $0.contains(" 001 ") }, "no welcome for \(login): \(lines)")
    return client
}

/// Deletes, as the other nodes' heartbeat does for a node not seen for a minute, the `nodes` row
/// of the node where `user` has sessions, and the presence rows of nodes that are gone.
private func forgetTheNodeOf(user: String, tenant: String, _ settings: PostgresSettings) async throws {
    let postgres = try await TestPostgres.server()
    let s = "\"\(settings.schema)\"."
    let logger = TestPostgres.logger
    try await postgres.client.withConnection { connection in
        try await connection.query("BEGIN", logger: logger)
        try await connection.query("SELECT set_config('deskline.tenant', '*', true)", logger: logger)
        let deleted = try await connection.query("""
            DELETE FROM \(unescaped: s)nodes WHERE node IN (SELECT node FROM \(unescaped: s)presence WHERE tenant_id = \(tenant) AND user_id = \(user))
            RETURNING node
            """, logger: logger).collect()
        #expect(deleted.count == 1, "the user should have sessions on exactly one node")
        try await connection.query("""
            DELETE FROM \(unescaped: s)presence p WHERE NOT EXISTS (SELECT 1 FROM \(unescaped: s)nodes n WHERE n.node = p.node)
            """, logger: logger)
        try await connection.query("COMMIT", logger: logger)
    }
}

/// Runs `body` while a transaction holds the `nodes` row of the node where `user` has sessions
/// (that node's presence writer and heartbeat wait for it meanwhile; keep it shorter than the
/// store's request timeout, 5 s).
private func holdingTheNodeRowOf(user: String, tenant: String, _ settings: PostgresSettings,
                                 _ body: () async throws -> Void) async throws {
    let postgres = try await TestPostgres.server()
    let s = "\"\(settings.schema)\"."
    let logger = TestPostgres.logger
    try await postgres.client.withConnection { connection in
        try await connection.query("BEGIN", logger: logger)
        do {
            try await connection.query("SELECT set_config('deskline.tenant', '*', true)", logger: logger)
            let locked = try await connection.query("""
                SELECT node FROM \(unescaped: s)nodes
                WHERE node IN (SELECT node FROM \(unescaped: s)presence WHERE tenant_id = \(tenant) AND user_id = \(user)) FOR UPDATE
                """, logger: logger).collect()
            #expect(locked.count == 1, "the user should have sessions on exactly one node")
            try await body()
        } catch {
            _ = try? await connection.query("ROLLBACK", logger: logger)
            throw error
        }
        try await connection.query("COMMIT", logger: logger)
    }
}

extension TestClient {
    /// How AGENTS shows `email` now: `<state> <sessions> :<away message>`, e.g. `away 1 :at lunch`.
    func agent(_ email: String) async throws -> String {
        let reply = try await command("AGENTS")
        #expect(reply.last?.hasPrefix("OK AGENTS ") == true, "\(reply)")
        guard let line = reply.first(where: { $0.hasPrefix("RPL AGENTS \(email) ") }) else { return "not listed in \(reply)" }
        // RPL AGENTS <email> <role> <state> <sessions> <name> :<away message>
        guard let separator = line.range(of: " :") else { return "no text in \(line)" }
        let words = line[..<separator.lowerBound].split(separator: " ")
        guard words.count == 7 else { return "unexpected \(line)" }
        return "\(words[4]) \(words[5]) :\(line[separator.upperBound...])"
    }

    /// Expects AGENTS to show `email` as `expected` (see ``agent(_:)``). With `pending`, asks again
    /// while it shows that (a change written asynchronously, such as a logout), for at most
    /// `within`, and expects what it shows next.
    func expectAgent(_ email: String, _ expected: String, waitingWhile pending: String? = nil, within: Duration = .seconds(10),
                     sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let seen = try await agent(email, until: { $0 != pending }, within: within)
        #expect(seen == expected, "AGENTS shows \(email) as '\(seen)'", sourceLocation: sourceLocation)
    }

    /// Asks AGENTS until `email`'s presence satisfies `done`, for at most `within`; returns the
    /// last answer.
    func agent(_ email: String, until done: (String) -> Bool, within: Duration = .seconds(10)) async throws -> String {
        let deadline = ContinuousClock.now + within
        var seen = try await agent(email)
        while !done(seen), ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(100))
            seen = try await agent(email)
        }
        return seen
    }
}
