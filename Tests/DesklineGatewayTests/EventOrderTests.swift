import DesklineCore
@testable import DesklineStore
import Foundation
import Testing

/// Pushes and answers keep the order of the tenant's event log (issue #17): the hub follows the
/// store's committed events from a task of its own, and an answer waits for its own event.
struct EventOrderTests {
    /// Ann's message and Amy's are stored in one batch, Ann's first: Amy gets Ann's message
    /// pushed before the OK of her own, as the log orders them.
    @Test func anAnswerNeverOvertakesThePushOfAnEarlierChange() async throws {
        try await withServer { server in
            let ann = try await server.login("ann@acme.test")
            _ = try await ann.command("NEW Order")
            let amy = try await server.login("amy@acme.test")
            _ = try await amy.command("ASSIGN #1001 me")
            _ = try await amy.drain()
            let writer = server.store.writer(TenantID(rawValue: "acme")!)
            for round in 0..<20 {
                let release = await writer.hold()
                try await ann.send("MSG #1001 ann \(round)")
                while writer.queuedJobs < 1 { try await Task.sleep(for: .milliseconds(1)) }
                try await amy.send("MSG #1001 amy \(round)")
                while writer.queuedJobs < 2 { try await Task.sleep(for: .milliseconds(1)) }
                release()
                _ = try await ann.readReply()
                var seen: [String] = []
                while seen.last?.hasPrefix("OK MSG") != true { seen.append(try #require(try await amy.readLine())) }
                // Ann's message is pushed before Amy's OK (the OK is the last line read).
                guard seen.contains(where: { $0.hasPrefix("EVENT TICKET #1001 ") && $0.hasSuffix(":ann \(round)") }) else {
                    Issue.record("round \(round): \(seen), then \(try await amy.drain(for: .milliseconds(200)))")
                    break
                }
                _ = try await ann.drain(for: .milliseconds(20))
            }
            for c in [ann, amy] { await c.close() }
        }
    }

    /// A customer's other session hears of her new ticket and can open it at once.
    @Test func aTicketPushedAsNewCanBeShownAtOnceByTheOtherSession() async throws {
        try await withServer { server in
            let first = try await server.login("ann@acme.test")
            let second = try await server.login("ann@acme.test")
            for round in 0..<20 {
                try await first.send("NEW Round \(round)")
                let event = try await second.expectLine(startingWith: "EVENT NEW")
                let id = String(event.split(separator: " ")[2])
                #expect(try await second.command("SHOW \(id)").last?.hasPrefix("OK SHOW \(id)") == true)
                #expect(try await first.readReply().last?.hasPrefix("OK NEW \(id)") == true)
            }
            for c in [first, second] { await c.close() }
        }
    }
}
