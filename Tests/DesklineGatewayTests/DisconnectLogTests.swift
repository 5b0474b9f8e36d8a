import Foundation
import Testing

/// Every disconnect is logged at `info`, once, with its reason (README "Logging").
@Suite struct DisconnectLogTests {
    /// Waits until the log has `count` disconnects.
    private func closes(_ log: LogCapture, count: Int) async throws -> [LogCapture.Entry] {
        let deadline = ContinuousClock.now + .seconds(10)
        while log.records("connection closed").count < count, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        return log.records("connection closed")
    }

    @Test func quitEndOfInputAndTimeoutAreEachLoggedWithTheirReason() async throws {
        let log = LogCapture()
        // (3 s: under a full suite's load a LOGIN, with its password check, took over 1 s.)
        try await withServer(logger: log.logger(), configure: { $0.limits.registrationTimeoutSeconds = 3 }) { server in
            let ann = try await server.login("ann@acme.test")
            #expect(try await ann.command("QUIT") == ["OK QUIT :Goodbye"])
            _ = try await ann.readUntilClosed()
            let first = try await closes(log, count: 1)
            #expect(first.map { $0.metadata["reason"] } == ["QUIT"])
            #expect(first.first?.metadata["tenant"] == "acme")
            #expect(first.first?.metadata["user"] == "u1")
            #expect(first.first?.level == .info)

            let amy = try await server.login("amy@acme.test")
            await amy.finishSending()
            _ = try await amy.readUntilClosed()
            #expect(try await closes(log, count: 2).last?.metadata["reason"] == "CLIENT_CLOSED")

            let idle = try await server.guest()
            _ = try await idle.readUntilClosed(timeout: .seconds(10))
            let third = try await closes(log, count: 3).last
            #expect(third?.metadata["reason"] == "REGISTRATION_TIMEOUT")
            #expect(third?.metadata["user"] == nil)
        }
        // Each disconnect was logged once.
        #expect(log.records("connection closed").count == 3)
    }
}
