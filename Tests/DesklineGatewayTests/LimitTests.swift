import DesklineCore
@testable import DesklineGateway
import Testing

@Suite struct LimitTests {
    @Test func failedLoginsFromOneAddressAreThrottledWithoutRevealingAccounts() async throws {
        try await withServer(configure: { $0.limits.loginFailuresPerAddress = 3 }) { server in
            let client = try await server.guest()
            for _ in 0..<3 {
                #expect(try await client.command("LOGIN ann@acme.test wrong password").last?.hasPrefix("ERR LOGIN LOGIN_FAILED") == true)
            }
            // Now even the right password, an unknown account or another connection is refused alike.
            let throttled = try await client.command("LOGIN ann@acme.test \(TestServer.password)")
            #expect(throttled.last?.hasPrefix("ERR LOGIN THROTTLED :Too many failed logins. Try again in ") == true)
            let other = try await server.guest()
            let unknown = try await other.command("LOGIN nobody@nowhere.test whatever")
            #expect(unknown.last?.hasPrefix("ERR LOGIN THROTTLED :Too many failed logins. Try again in ") == true)
            for c in [client, other] { await c.close() }
        }
    }

    @Test func wrongCurrentPasswordsInPASSWDAreThrottledLikeLogins() async throws {
        // Per account: a session cannot guess its account's password faster than LOGIN could.
        try await withServer(configure: { $0.limits.loginFailuresPerAccount = 3; $0.limits.loginFailuresPerAddress = 100 }) { server in
            let ann = try await server.login("ann@acme.test")
            for _ in 0..<3 {
                #expect(try await ann.command("PASSWD wrong a-new-password").last?.hasPrefix("ERR PASSWD WRONG_PASSWORD") == true)
            }
            // Refused without a password check, even with the right current password ...
            let refused = try await ann.command(#"PASSWD correct\shorse\sbattery a-new-password"#)
            #expect(refused.last?.hasPrefix("ERR PASSWD THROTTLED :Too many failed password checks. Try again in ") == true)
            // ... so the password is unchanged, and other accounts are not affected.
            let again = try await server.login("ann@acme.test")
            let bob = try await server.login("bob@acme.test")
            #expect(try await bob.command(#"PASSWD correct\shorse\sbattery bobs-new-password"#) == ["OK PASSWD :Password changed"])
            for c in [ann, again, bob] { await c.close() }
        }
        // Per address: they count with failed logins from the same address.
        try await withServer(configure: { $0.limits.loginFailuresPerAddress = 2 }) { server in
            let ann = try await server.login("ann@acme.test")
            for _ in 0..<2 {
                #expect(try await ann.command("PASSWD wrong a-new-password").last?.hasPrefix("ERR PASSWD WRONG_PASSWORD") == true)
            }
            let guest = try await server.guest()
            #expect(try await guest.command("LOGIN amy@acme.test \(TestServer.password)").last?.hasPrefix("ERR LOGIN THROTTLED ") == true)
            for c in [ann, guest] { await c.close() }
        }
    }

    @Test func connectionsPerAddressAreLimited() async throws {
        try await withServer(configure: { $0.limits.maxConnectionsPerAddress = 2 }) { server in
            let a = try await server.guest()
            let b = try await server.guest()
            let c = try await server.connect()
            #expect(try await c.readUntilClosed() == ["EVENT ERROR TOO_MANY_CONNECTIONS :Too many connections from your address."])
            #expect(try await a.command("PING still") == ["OK PING :still"])
            await b.close()
            // Its slot is free once its session has ended (not a fixed wait: a loaded machine
            // may take longer than any).
            let deadline = ContinuousClock.now + .seconds(10)
            while server.server.sessionCount > 1, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
            try await Task.sleep(for: .milliseconds(50)) // (the slot is released right after)
            let d = try await server.guest() // a slot is free again
            #expect(try await d.command("PING d") == ["OK PING :d"])
            for x in [a, d] { await x.close() }
        }
    }

    @Test func newConnectionsPerMinuteAreLimited() async throws {
        try await withServer(configure: { $0.limits.maxNewConnectionsPerAddressPerMinute = 3 }) { server in
            for _ in 0..<3 {
                let c = try await server.guest()
                await c.close()
            }
            let fourth = try await server.connect()
            #expect(try await fourth.readUntilClosed() == ["EVENT ERROR TOO_MANY_CONNECTIONS :Too many new connections from your address; wait a minute."])
        }
    }

    @Test func floodControlDelaysButNeverRefuses() async throws {
        try await withServer(configure: {
            $0.limits.floodBurst = 3
            $0.limits.floodCommandsPerSecond = 20
        }) { server in
            let client = try await server.guest()
            try await client.sendRaw(Array((1...12).map { "@label=\($0) PING \($0)\n" }.joined().utf8))
            var labels: [String] = []
            for _ in 1...12 { labels.append(String(try await client.readReply().last!.prefix(while: { $0 != " " }))) }
            #expect(labels == (1...12).map { "@label=\($0)" })
            await client.close()
        }
    }
}

struct TokenBucketTests {
    @Test func aBurstThenTheSteadyRate() {
        let start = ContinuousClock.now
        var bucket = TokenBucket(burst: 3, ratePerSecond: 10, now: start)
        #expect((0..<3).map { _ in bucket.take(now: start) } == [.zero, .zero, .zero])
        #expect(bucket.take(now: start) == .milliseconds(100))
        // After a quiet second the burst is back.
        #expect(bucket.take(now: start + .seconds(2)) == .zero)
    }
}

struct LoginThrottleTests {
    /// Every spelling of a login that reaches one account counts as that account.
    @Test func anAccountIsKeyedByItsNormalisedEmail() {
        let key = LoginThrottle.accountKey("ann@acme.test")
        for login in ["acme/ann@acme.test", "ANN@Acme.Test", "ann@acme.test\t", "globex/ann@acme.test  "] {
            #expect(LoginThrottle.accountKey(login) == key, "\(login)")
        }
        #expect(LoginThrottle.accountKey("not an email") == "not an email")
        #expect(LoginThrottle.accountKey("bob@acme.test") != key)
    }

    let start = ContinuousClock.now
    func throttle() -> LoginThrottle {
        LoginThrottle(perAddress: .init(limit: 5, window: .seconds(300)), perAccount: .init(limit: 10, window: .seconds(900)))
    }

    @Test func perAccountLimitHoldsAcrossAddressesAndSuccessResetsIt() {
        var t = throttle()
        for i in 0..<10 { t.recordFailure(address: "10.0.0.\(i)", account: "ann@x", now: start) }
        #expect(t.retryAfter(address: "10.0.0.99", account: "ann@x", now: start + .seconds(1)) == .seconds(899))
        #expect(t.retryAfter(address: "10.0.0.99", account: "bob@x", now: start + .seconds(1)) == nil)
        #expect(t.retryAfter(address: "10.0.0.99", account: "ann@x", now: start + .seconds(900)) == nil)
        t.recordSuccess(account: "ann@x")
        #expect(t.retryAfter(address: "10.0.0.99", account: "ann@x", now: start + .seconds(2)) == nil)
    }

    @Test func perAddressLimitWindowSlides() {
        var t = throttle()
        for s in 0..<5 { t.recordFailure(address: "a", account: "x\(s)", now: start + .seconds(Double(s))) }
        #expect(t.retryAfter(address: "a", account: "y", now: start + .seconds(10)) == .seconds(290))
        #expect(t.retryAfter(address: "a", account: "y", now: start + .seconds(300)) == nil)
    }
}
