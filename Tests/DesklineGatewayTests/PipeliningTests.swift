import DesklineCore
@testable import DesklineStore
import Foundation
@testable import DesklineGateway
import Testing

/// Messages sent back to back are committed together (MSG and NOTE pipeline: the next starts
/// once the previous one's write is queued), yet everything a client sees stays sequential:
/// replies in command order, pushes in ticket order, and a command that reads sees every write
/// sent before it.
struct PipeliningTests {
    @Test func theWritersEarlyStartMatchesOneSessionsPipeline() {
        // A busy tenant writer stops waiting for its group commit interval once as many writes
        // wait as one session may have in flight.
        #expect(TenantWriter.enoughToStart == SessionHandler.maximumInFlight)
    }

    @Test func messagesSentAtOnceShareCommitsAndKeepTheirOrder() async throws {
        try await withServer { server in
            let ann = try await server.login("ann@acme.test")
            _ = try await ann.command("NEW Many messages")
            let ada = try await server.login("ada@acme.test")
            _ = try await ada.drain() // EVENT NEW
            #expect(try await ada.command("JOIN #1001").first?.hasPrefix("OK JOIN #1001") == true)

            // Hold the tenant's writer: the messages can only pile up in its queue if each one
            // starts before the one before it is durable.
            let count = 90 // (with LOGIN and NEW, within the default flood burst of 100)
            let writer = server.store.writer(TenantID(unchecked: "acme"))
            let release = await writer.hold()
            let before = server.store.writeStatistics()
            try await ann.sendRaw(Array((1...count).map { "@label=m\($0) MSG #1001 message \($0)\n" }.joined().utf8))
            // As many as a session runs at once are queued while the first waits; no more.
            let window = SessionHandler.maximumInFlight
            let deadline = ContinuousClock.now + .seconds(10)
            while writer.queuedJobs < window, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(1)) }
            try await Task.sleep(for: .milliseconds(100))
            #expect(writer.queuedJobs == window, "messages queued while the first waits for its commit")
            release()
            for n in 1...count {
                #expect(try await ann.readReply() == ["@label=m\(n) OK MSG #1001 \(n) open :Message \(n) added to #1001"])
            }
            // The queued ones shared one commit (one fsync); the rest took at most one each.
            let commits = server.store.writeStatistics().commits - before.commits
            #expect(commits <= 2 + count - window, "\(commits) commits for \(count) pipelined messages")

            // The watcher got them in ticket order, exactly as HISTORY lists them.
            var pushed: [String] = []
            for _ in 1...count { pushed.append(try await ada.expectLine(startingWith: "EVENT TICKET")) }
            #expect(pushed.map { $0.split(separator: " ")[3] } == (1...count).map { "\($0)" })
            #expect(pushed.map { String($0.split(separator: ":").last!) } == (1...count).map { "message \($0)" })
            let history = try await ann.command("HISTORY #1001 \(count)")
            #expect(history.dropLast() == pushed.map { "RPL HISTORY" + $0.dropFirst("EVENT TICKET".count) })
            for c in [ann, ada] { await c.close() }
        }
    }

    @Test func aCommandThatReadsSeesTheWritesSentBeforeIt() async throws {
        try await withServer { server in
            let ann = try await server.login("ann@acme.test")
            _ = try await ann.command("NEW Read after write")
            try await ann.sendRaw(Array("""
                @label=a MSG #1001 one
                @label=b MSG #1001 two
                @label=c HISTORY #1001
                @label=d MSG #1001 three
                @label=e NOPE
                @label=f MSG #1001 four

                """.utf8))
            #expect(try await ann.readReply().last == "@label=a OK MSG #1001 1 open :Message 1 added to #1001")
            #expect(try await ann.readReply().last == "@label=b OK MSG #1001 2 open :Message 2 added to #1001")
            let history = try await ann.readReply()
            #expect(history.count == 3)
            #expect(history[0].hasSuffix(":one") && history[1].hasSuffix(":two"))
            #expect(history.last == "@label=c OK HISTORY #1001 2 :2 entries")
            #expect(try await ann.readReply().last == "@label=d OK MSG #1001 3 open :Message 3 added to #1001")
            #expect(try await ann.readReply().last?.hasPrefix("@label=e ERR NOPE UNKNOWN_COMMAND") == true)
            #expect(try await ann.readReply().last == "@label=f OK MSG #1001 4 open :Message 4 added to #1001")
            await ann.close()
        }
    }

    @Test func aRefusedMessageInTheMiddleChangesNothingAroundIt() async throws {
        try await withServer { server in
            let ann = try await server.login("ann@acme.test")
            _ = try await ann.command("NEW Open one")
            _ = try await ann.command("NEW Closed one")
            #expect(try await ann.command("CLOSE #1002").first?.hasPrefix("OK CLOSE #1002") == true)
            try await ann.sendRaw(Array("""
                @label=1 MSG #1001 before
                @label=2 MSG #1002 into a closed ticket
                @label=3 MSG #1999 nowhere
                @label=4 MSG #1001 after
                @label=5 CLOSE #1001
                @label=6 MSG #1001 too late

                """.utf8))
            #expect(try await ann.readReply() == ["@label=1 OK MSG #1001 1 open :Message 1 added to #1001"])
            #expect(try await ann.readReply().last?.hasPrefix("@label=2 ERR MSG TICKET_CLOSED") == true)
            #expect(try await ann.readReply().last?.hasPrefix("@label=3 ERR MSG NO_SUCH_TICKET") == true)
            #expect(try await ann.readReply() == ["@label=4 OK MSG #1001 2 open :Message 2 added to #1001"])
            #expect(try await ann.readReply().last?.hasPrefix("@label=5 OK CLOSE #1001") == true)
            #expect(try await ann.readReply().last?.hasPrefix("@label=6 ERR MSG TICKET_CLOSED") == true)
            let history = try await ann.command("HISTORY #1001")
            #expect(history.filter { $0.hasPrefix("RPL HISTORY #1001") }.map { $0.split(separator: ":").last! } == ["before", "after", "closed"])
            await ann.close()
        }
    }
}
