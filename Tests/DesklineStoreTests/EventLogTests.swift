import DesklineCore
@testable import DesklineStore
import Foundation
import NIOPosix
import Testing

/// The tenant's event log (the outbox): every committed change's event numbered 1, 2, 3, ... in
/// commit order, in the same commit as the change, fed to subscribers once durable, readable
/// from any number after a restart.
struct EventLogTests {
    let root = NSTemporaryDirectory() + "deskline-events-" + UUID().uuidString
    let acme = TenantID(rawValue: "acme")!
    let globex = TenantID(rawValue: "globex")!

    func message(_ text: String) -> TicketEntryDraft {
        TicketEntryDraft(kind: .message, authorId: UserID(rawValue: "u1")!, authorName: "Ann", authorRole: .customer, text: text)
    }

    func seeded(threadPool: NIOThreadPool = .singleton) async throws -> (FileStore, CustomerID) {
        let store = try await FileStore(root: root, threadPool: threadPool)
        try await store.createTenant(Tenant(id: acme, name: "Acme", createdAt: Date()))
        try await store.createTenant(Tenant(id: globex, name: "Globex", createdAt: Date()))
        let c = try await store.createCustomer(NewCustomer(name: "Ann", email: "ann@x.test", phone: nil), in: acme, at: Date())
        return (store, c.id)
    }

    /// What `feed` delivers until it has `count` events (or 10 s passed).
    static func collect(_ count: Int, from feed: AsyncStream<[TicketEvent]>) async -> [[TicketEvent]] {
        await withTaskGroup(of: [[TicketEvent]].self) { group in
            group.addTask {
                var batches: [[TicketEvent]] = []
                for await batch in feed {
                    batches.append(batch)
                    if batches.joined().count >= count { break }
                }
                return batches
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(10))
                return []
            }
            let batches = await group.next() ?? []
            group.cancelAll()
            return batches
        }
    }

    @Test func concurrentChangesAreNumberedWithoutGapsInCommitOrderAndFedInThatOrder() async throws {
        let (store, customer) = try await seeded()
        let feed = store.committedEvents()
        let tickets = try await (0..<4).asyncMap { i in try await store.openTicket(customer: customer, subject: "t\(i)", in: acme, at: Date()).id }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for n in 0..<200 {
                group.addTask { _ = try await store.appendEntry(self.message("m\(n)"), to: tickets[n % 4], in: self.acme, at: Date()) }
            }
            try await group.waitForAll()
        }
        let logged = try await store.events(in: acme, after: 0, limit: 1000)
        #expect(logged.map(\.seq) == (1...204).map { $0 })
        // Each ticket's events in its entries' order: the log is the commit order.
        for ticket in tickets {
            let seqs = logged.filter { $0.ticket?.id == ticket && $0.kind == .entry }.compactMap(\.entry?.seq)
            #expect(seqs == (1...50).map { $0 })
        }
        let batches = await Self.collect(204, from: feed)
        #expect(Array(batches.joined()) == logged)
        // Batches shared commits: fewer batches than events.
        #expect(batches.count < 204)
        #expect(batches.allSatisfy { $0.allSatisfy { $0.tenantId == acme } })
        // Each message is stored once: the event log names its ticket log line instead.
        let raw = try String(contentsOfFile: root + "/tenants/acme/events/1.jsonl", encoding: .utf8)
        #expect(!raw.contains("m17") && raw.contains("\"stored\":{\"seq\":"))
        // Paging from any number.
        #expect(try await store.events(in: acme, after: 100, limit: 3).map(\.seq) == [101, 102, 103])
        #expect(try await store.events(in: acme, after: 204, limit: 3) == [])
        #expect(try await store.events(in: globex, after: 0, limit: 3) == [])
        #expect(try await store.check(repair: false).problems == [])
    }

    /// Events read back from the log (their ticket and entry from the ticket log's lines) are the
    /// events committed, for notes, status changes and changes without an entry in between.
    @Test func eventsReadBackAreTheEventsCommittedWhateverLinesLieBetween() async throws {
        let (store, customer) = try await seeded()
        let feed = store.committedEvents()
        let ticket = try await store.openTicket(customer: customer, subject: "s", in: acme, at: Date()).id
        let agent = UserID(rawValue: "u2")!
        func entry(_ kind: TicketEntry.Kind, _ text: String, by author: UserID? = nil) async throws {
            let draft = TicketEntryDraft(kind: kind, authorId: author ?? agent, authorName: "Amy", authorRole: .agent, text: text)
            _ = try await store.appendEntry(draft, to: ticket, in: acme, at: Date()) { ticket in
                if kind == .status { ticket.status = .pending }
            }
        }
        try await entry(.note, "a note before any message")
        try await entry(.message, "one")
        _ = try await store.appendEntry(nil, to: ticket, in: acme, at: Date()) { $0.customerUnread = 0 } // no entry, no event
        try await entry(.note, "a note")
        try await entry(.status, "pending")
        _ = try await store.appendEntry(nil, to: ticket, in: acme, at: Date()) { $0.assigneeName = "Amy" }
        try await entry(.message, "two")
        let fed = await Self.collect(6, from: feed).joined()
        #expect(fed.map(\.kind) == [.created, .entry, .entry, .entry, .entry, .entry])
        #expect(try await store.events(in: acme, after: 0, limit: 20) == Array(fed))
        #expect(try await store.events(in: acme, after: 3, limit: 2) == Array(fed.dropFirst(3).prefix(2)))
        #expect(try await store.check(repair: false).problems == [])

        // A ticket log that lost its last line (damage): check names the events that point there,
        // and a catch-up read leaves the event out instead of failing.
        let path = root + "/tenants/acme/tickets/\(ticket.number).jsonl"
        var lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
        lines.removeLast()
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: false, encoding: .utf8)
        #expect(try await store.check(repair: false).problems.contains { $0.contains("1 event(s) name a ticket log line that is not there (the first: event 6)") })
        let restarted = try await FileStore(root: root)
        #expect(try await restarted.events(in: acme, after: 0, limit: 20).map(\.seq) == [1, 2, 3, 4, 5])
    }

    @Test func numberingGoesOnAfterARestartAndTheLogReadsBackWhole() async throws {
        let (store, customer) = try await seeded()
        let ticket = try await store.openTicket(customer: customer, subject: "s", in: acme, at: Date()).id
        _ = try await store.appendEntry(message("one"), to: ticket, in: acme, at: Date())
        let before = try await store.events(in: acme, after: 0, limit: 10)
        #expect(before.map(\.kind) == [.created, .entry])

        let restarted = try await FileStore(root: root)
        #expect(try await restarted.lastEventSeq(in: acme) == 2)
        #expect(try await restarted.events(in: acme, after: 0, limit: 10) == before)
        let next = try await restarted.changeTicket(ticket, in: acme) { state in
            var ticket = state.ticket
            let entry = ticket.append(self.message("two"), at: Timestamp.truncate(Date()))
            let event = TicketEvent(kind: .entry, tenantId: self.acme, ticket: ticket, entry: entry,
                                    actor: Actor(id: entry.authorId, name: "Ann", role: .customer), at: entry.at,
                                    originSession: SessionID(node: "feedc0de00000000", number: 7))
            return Change(ticket: ticket, entry: entry, event: event)
        }
        #expect(next?.event?.seq == 3)
        // Every field comes back as committed (the origin too, for other nodes to skip it).
        #expect(try await restarted.events(in: acme, after: 2, limit: 10) == [try #require(next?.event)])
    }

    @Test func aBatchThatFailsTakesNoNumberAndIsNeverFed() async throws {
        let pool = NIOThreadPool(numberOfThreads: 2)
        pool.start()
        let (store, customer) = try await seeded(threadPool: pool)
        // (Subscribed first: the writer resumes a write's caller before it feeds the event, so a
        // feed subscribed right after the open may still get the open's event.)
        let feed = store.committedEvents()
        let ticket = try await store.openTicket(customer: customer, subject: "s", in: acme, at: Date()).id
        store.faults.failNext(.sync, pathSuffix: "/events/1.jsonl", errno: EIO)
        await #expect(throws: DesklineError.self) {
            try await store.appendEntry(message("lost"), to: ticket, in: acme, at: Date())
        }
        _ = try await store.appendEntry(message("kept"), to: ticket, in: acme, at: Date())
        let fed = await Self.collect(2, from: feed)
        #expect(fed.joined().map(\.seq) == [1, 2])
        #expect(fed.joined().map(\.entry?.text) == [nil, "kept"])
        #expect(try await store.events(in: acme, after: 0, limit: 10).map(\.seq) == [1, 2])
        #expect(try await store.check(repair: false).problems == [])
        try await pool.shutdownGracefully()
    }

    @Test func theLogIsCutIntoSegmentsAndKeepsTheLastOnes() async throws {
        let retention = EventLogRetention(eventsPerSegment: 3, segmentsKept: 2)
        let store = try await FileStore(root: root, eventLog: retention)
        try await store.createTenant(Tenant(id: acme, name: "Acme", createdAt: Date()))
        let customer = try await store.createCustomer(NewCustomer(name: "Ann", email: "ann@x.test", phone: nil), in: acme, at: Date()).id
        let ticket = try await store.openTicket(customer: customer, subject: "s", in: acme, at: Date()).id
        for n in 2...9 { _ = try await store.appendEntry(message("m\(n)"), to: ticket, in: acme, at: Date()) }
        func segments() throws -> [String] {
            try FileManager.default.contentsOfDirectory(atPath: root + "/tenants/acme/events").sorted { $0.count == $1.count ? $0 < $1 : $0.count < $1.count }
        }
        #expect(try segments() == ["4.jsonl", "7.jsonl"]) // 7 began a segment: 1 went
        // Event 10 begins a segment: those before the last two go.
        _ = try await store.appendEntry(message("m10"), to: ticket, in: acme, at: Date())
        #expect(try segments() == ["7.jsonl", "10.jsonl"])
        #expect(try await store.lastEventSeq(in: acme) == 10)
        // Reads cross segments; a read from before the kept ones starts at the oldest kept.
        #expect(try await store.events(in: acme, after: 8, limit: 5).map(\.seq) == [9, 10])
        #expect(try await store.events(in: acme, after: 7, limit: 2).map(\.seq) == [8, 9])
        #expect(try await store.events(in: acme, after: 0, limit: 10).map(\.seq) == [7, 8, 9, 10])
        #expect(try await store.events(in: acme, after: 10, limit: 10) == [])
        #expect(try await store.check(repair: false).problems == [])
        // Numbering goes on after a restart, in the right segment.
        let restarted = try await FileStore(root: root, eventLog: retention)
        let next = try await restarted.changeTicket(ticket, in: acme) { state in
            var ticket = state.ticket
            let entry = ticket.append(self.message("m11"), at: Timestamp.truncate(Date()))
            return Change(ticket: ticket, entry: entry,
                          event: TicketEvent(kind: .entry, tenantId: self.acme, ticket: ticket, entry: entry,
                                             actor: Actor(id: entry.authorId, name: "Ann", role: .customer), at: entry.at))
        }
        #expect(next?.event?.seq == 11)
        #expect(try String(contentsOfFile: root + "/tenants/acme/events/10.jsonl", encoding: .utf8).split(separator: "\n").count == 2)
        // A gap between segments is reported.
        try FileManager.default.removeItem(atPath: root + "/tenants/acme/events/10.jsonl")
        try Data().write(to: URL(fileURLWithPath: root + "/tenants/acme/events/13.jsonl"))
        try "{\"seq\":13}\n".write(toFile: root + "/tenants/acme/events/13.jsonl", atomically: false, encoding: .utf8)
        #expect(try await restarted.check(repair: false).problems.contains { $0.contains("jumps from event 9 to 13") })
    }

    @Test func aCallRequestItsInboxLinesAndItsEventAreOneCommit() async throws {
        let (store, customer) = try await seeded()
        let amy = UserID(rawValue: "u9")!
        let before = store.writeStatistics().commits
        let filed = try await store.fileCall(in: acme) { id in
            let call = CallRequest.filed(id, in: self.acme, by: customer, about: nil, phone: "+1 555", note: "soon", at: Timestamp.truncate(Date()))
            let event = TicketEvent(kind: .call, tenantId: self.acme, call: call, actor: Actor(id: UserID(rawValue: "u1")!, name: "Ann", role: .customer),
                                    at: call.createdAt, recipients: [amy])
            return Change(call: call, inbox: InboxDelivery(event), event: event)
        }
        #expect(store.writeStatistics().commits - before == 1)
        #expect(filed.event?.seq == 1)
        #expect(try await store.inbox(of: amy, in: acme).items.map(\.call) == [CallID(1)])
        let accepted = try await store.changeCall(CallID(1), in: acme) { state throws(DesklineError) -> Change in
            var call = state.call
            call.status = .accepted
            let event = TicketEvent(kind: .call, tenantId: self.acme, ticket: try state.ticket(), call: call,
                                    actor: Actor(id: amy, name: "Amy", role: .agent), at: call.updatedAt, customerUserId: try state.customerLogin())
            return Change(call: call, event: event)
        }
        #expect(accepted?.event?.seq == 2)
        #expect(try await store.events(in: acme, after: 0, limit: 10).map(\.call?.status) == [.requested, .accepted])
        // A change about something else than it was asked to change is refused.
        await #expect(throws: DesklineError.self) {
            try await store.changeCall(CallID(1), in: self.acme) { state in Change(ticket: nil, call: nil) }
        }
    }
}

extension Sequence {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var result: [T] = []
        for element in self { result.append(try await transform(element)) }
        return result
    }
}
