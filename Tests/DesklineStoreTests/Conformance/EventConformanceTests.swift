import DesklineCore
import Foundation
import Synchronization
import Testing

/// Inboxes, call requests, the event log and its feed: the same behaviour from every backend.
struct InboxConformanceTests {
    @Test(arguments: StoreKind.allCases)
    func inboxesAreNumberedPerUserAndReadMarksFollowTheRules(_ kind: StoreKind) async throws {
        let w = try await kind.seeded()
        let ticket = try await w.open()
        for text in ["one", "two", "three"] {
            _ = try await w.store.changeTicket(ticket.id, in: w.acme, w.telling([w.amy], w.draft(.message, text)))
        }
        _ = try await w.store.changeTicket(ticket.id, in: w.acme, w.telling([w.bob, w.amy], w.draft(.message, "four")))
        let amy = try await w.store.inbox(of: w.amy, in: w.acme)
        #expect(amy.items.map(\.id) == [1, 2, 3, 4])
        #expect(amy.items.map(\.text) == ["one", "two", "three", "four"])
        #expect(amy.items.allSatisfy { $0.type == "message" && $0.actorName == "ann" && $0.at == Timestamp.truncate($0.at) })
        #expect(amy.lastId == 4 && amy.readUpTo == 0 && amy.readIds.isEmpty)
        #expect(try await w.store.inbox(of: w.bob, in: w.acme).items.map(\.id) == [1])
        #expect(try await w.store.unreadNotificationCount(of: w.amy, in: w.acme) == 4)

        try await w.store.markNotificationsRead(3, of: w.amy, in: w.acme)
        var inbox = try await w.store.inbox(of: w.amy, in: w.acme)
        #expect(inbox.readUpTo == 0 && inbox.readIds == [3])
        #expect(try await w.store.unreadNotificationCount(of: w.amy, in: w.acme) == 3)
        try await w.store.markNotificationsRead(1, of: w.amy, in: w.acme)
        try await w.store.markNotificationsRead(2, of: w.amy, in: w.acme)
        inbox = try await w.store.inbox(of: w.amy, in: w.acme)
        #expect(inbox.readUpTo == 3 && inbox.readIds.isEmpty)
        #expect(inbox.isRead(2) && !inbox.isRead(4))
        // Marking one read again changes nothing.
        try await w.store.markNotificationsRead(2, of: w.amy, in: w.acme)
        #expect(try await w.store.unreadNotificationCount(of: w.amy, in: w.acme) == 1)
        for never in [0, 5, -1] {
            await #expect(throws: DesklineError.notFound("You have no notification \(never).")) {
                try await w.store.markNotificationsRead(never, of: w.amy, in: w.acme)
            }
        }
        await #expect(throws: DesklineError.notFound("You have no notification 1.")) {
            try await w.store.markNotificationsRead(1, of: w.ann, in: w.acme)
        }
        try await w.store.markNotificationsRead(nil, of: w.amy, in: w.acme)
        #expect(try await w.store.unreadNotificationCount(of: w.amy, in: w.acme) == 0)
        // All read is up to the last id handed out; a new one is unread.
        _ = try await w.store.changeTicket(ticket.id, in: w.acme, w.telling([w.amy], w.draft(.message, "five")))
        #expect(try await w.store.unreadNotificationCount(of: w.amy, in: w.acme) == 1)
        #expect(try await w.store.inbox(of: w.amy, in: w.acme).items.last?.id == 5)
        // Nobody's inbox, and an inbox in another tenant, are empty.
        try await w.store.markNotificationsRead(nil, of: w.ann, in: w.acme)
        #expect(try await w.store.inbox(of: w.ann, in: w.acme) == Inbox(items: [], readUpTo: 0, readIds: [], lastId: 0))
        #expect(try await w.store.inbox(of: w.amy, in: w.globex).items.isEmpty)
        #expect(try await w.store.unreadNotificationCount(of: w.amy, in: w.globex) == 0)
    }
}

struct CallConformanceTests {
    func filing(_ w: World, about ticket: TicketID?, tell users: [UserID] = []) -> NewCallDecision {
        let time = w.now
        return { id in
            let call = CallRequest.filed(id, in: w.acme, by: w.annC, about: ticket, phone: "+1 555 0100", note: "soon", at: time)
            let event = TicketEvent(kind: .call, tenantId: w.acme, call: call, actor: Actor(id: w.ann, name: "ann", role: .customer),
                                    at: time, recipients: users)
            return Change(call: call, inbox: InboxDelivery(event), event: event)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func callsAreNumberedFromOnePerTenantListedAndChanged(_ kind: StoreKind) async throws {
        let w = try await kind.seeded()
        let ticket = try await w.open()
        let first = try await w.store.fileCall(in: w.acme, filing(w, about: ticket.id, tell: [w.amy]))
        #expect(first.call?.id == CallID(1))
        #expect(first.event?.seq == 2)
        #expect(try await w.store.inbox(of: w.amy, in: w.acme).items.map(\.call) == [CallID(1)])
        // A refused filing and one about another call take no number.
        await #expect(throws: DesklineError.conflict("no")) {
            try await w.store.fileCall(in: w.acme) { _ throws(DesklineError) -> Change in throw .conflict("no") }
        }
        await #expect(throws: DesklineError.self) {
            try await w.store.fileCall(in: w.acme) { id throws(DesklineError) -> Change in try self.filing(w, about: nil)(CallID(id.number + 1)) }
        }
        await #expect(throws: DesklineError.self) {
            try await w.store.fileCall(in: w.acme) { id throws(DesklineError) -> Change in
                var change = try self.filing(w, about: nil)(id)
                change.ticket = ticket
                return change
            }
        }
        let second = try await w.store.fileCall(in: w.acme, filing(w, about: nil))
        #expect(second.call?.id == CallID(2))
        #expect(try await w.store.calls(in: w.acme).map(\.id) == [CallID(1), CallID(2)])
        #expect(try await w.store.calls(ofCustomer: w.annC, in: w.acme) == [first.call, second.call].compactMap { $0 })
        #expect(try await w.store.calls(ofCustomer: w.bobC, in: w.acme) == [])
        #expect(try await w.store.calls(in: w.globex) == [])

        let accepted = try await w.store.changeCall(CallID(1), in: w.acme) { state throws(DesklineError) -> Change in
            var call = state.call
            call.status = .accepted
            call.agentId = w.amy
            let event = TicketEvent(kind: .call, tenantId: w.acme, ticket: try state.ticket(), call: call,
                                    actor: Actor(id: w.amy, name: "amy", role: .agent), at: w.now, customerUserId: try state.customerLogin())
            return Change(call: call, event: event)
        }
        #expect(accepted?.event?.ticket == ticket)
        #expect(accepted?.event?.customerUserId == w.ann)
        #expect(second.event?.seq == 3)
        #expect(accepted?.event?.seq == 4)
        #expect(try await w.store.calls(in: w.acme).first?.status == .accepted)
        #expect(try await w.store.changeCall(CallID(9), in: w.acme) { Change(call: $0.call) } == nil)
        // A change about another call, or about a ticket, is refused.
        await #expect(throws: DesklineError.self) {
            try await w.store.changeCall(CallID(2), in: w.acme) { state in
                var call = state.call
                call.id = CallID(1)
                return Change(call: call)
            }
        }
        await #expect(throws: DesklineError.self) {
            try await w.store.changeCall(CallID(2), in: w.acme) { state in Change(ticket: ticket, call: state.call) }
        }
        #expect(try await w.store.calls(in: w.acme).map(\.status) == [.accepted, .requested])
    }
}

struct EventLogConformanceTests {
    @Test(arguments: StoreKind.allCases)
    func eventsAreNumberedPerTenantWithoutGapsAndReadInPages(_ kind: StoreKind) async throws {
        let w = try await kind.seeded()
        #expect(try await w.store.lastEventSeq(in: w.acme) == 0)
        #expect(try await w.store.events(in: w.acme, after: 0, limit: 10) == [])
        let ticket = try await w.open()
        for i in 1...5 { try await w.append(w.draft(.message, "m\(i)"), to: ticket.id) }
        _ = try await w.open(customer: .numbered(1), in: w.globex)
        #expect(try await w.store.lastEventSeq(in: w.acme) == 6)
        #expect(try await w.store.lastEventSeq(in: w.globex) == 1)
        let all = try await w.store.events(in: w.acme, after: 0, limit: 100)
        #expect(all.map(\.seq) == Array(1...6))
        #expect(all.map(\.kind) == [.created] + Array(repeating: .entry, count: 5))
        #expect(all.allSatisfy { $0.tenantId == w.acme })
        #expect(try await w.store.events(in: w.acme, after: 0, limit: 2) == Array(all[0..<2]))
        #expect(try await w.store.events(in: w.acme, after: 2, limit: 3) == Array(all[2..<5]))
        #expect(try await w.store.events(in: w.acme, after: 4, limit: 10) == Array(all[4...]))
        #expect(try await w.store.events(in: w.acme, after: 6, limit: 10) == [])
        #expect(try await w.store.events(in: w.acme, after: 0, limit: 0) == [])
        #expect(try await w.store.events(in: w.globex, after: 0, limit: 10).map(\.seq) == [1])
        #expect(try await w.store.events(in: TenantID(rawValue: "initech")!, after: 0, limit: 10) == [])
    }

    @Test(arguments: StoreKind.allCases)
    func theFeedDeliversEachTenantsCommittedEventsInOrder(_ kind: StoreKind) async throws {
        let w = try await kind.seeded()
        let feed = w.store.committedEvents()
        let before = try await w.open("first")
        let ticket = try await w.open()
        let globex = try await w.open(customer: .numbered(1), in: w.globex)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<20 {
                group.addTask { try await w.append(w.draft(.message, "m\(i)"), to: i % 2 == 0 ? ticket.id : before.id) }
            }
            group.addTask { try await w.append(w.draft(.message, "g"), to: globex.id, in: w.globex) }
            try await group.waitForAll()
        }
        // A refused write is not fed.
        _ = try? await w.store.changeTicket(ticket.id, in: w.acme) { _ throws(DesklineError) -> Change in throw .conflict("no") }
        let batches = await EventLogTests.collect(24, from: feed)
        #expect(batches.allSatisfy { batch in batch.allSatisfy { $0.tenantId == batch.first?.tenantId } })
        let fed = Array(batches.joined())
        #expect(fed.count == 24)
        #expect(fed.filter { $0.tenantId == w.acme } == (try await w.store.events(in: w.acme, after: 0, limit: 100)))
        #expect(fed.filter { $0.tenantId == w.globex } == (try await w.store.events(in: w.globex, after: 0, limit: 100)))
        #expect(fed.filter { $0.tenantId == w.acme }.map(\.seq) == Array(1...22))
    }

    @Test(arguments: StoreKind.allCases)
    func aWritesEventReachesTheFollowersBeforeTheWriteReturnsUntilTheyCancel(_ kind: StoreKind) async throws {
        let w = try await kind.seeded()
        let first = Mutex<[Int]>([]), second = Mutex<[Int]>([])
        let one = w.store.followCommittedEvents { events in first.withLock { $0 += events.compactMap(\.seq) } }
        let two = w.store.followCommittedEvents { events in second.withLock { $0 += events.compactMap(\.seq) } }
        let ticket = try await w.open()
        #expect(first.withLock { $0 } == [1] && second.withLock { $0 } == [1])
        _ = try await w.append(w.draft(.message, "a"), to: ticket.id)
        #expect(first.withLock { $0 } == [1, 2] && second.withLock { $0 } == [1, 2])
        one.cancel()
        _ = try await w.append(w.draft(.message, "b"), to: ticket.id)
        #expect(first.withLock { $0 } == [1, 2])
        #expect(second.withLock { $0 } == [1, 2, 3])
        two.cancel()
    }

    @Test(arguments: StoreKind.allCases)
    func whenQueuedIsCalledOnceForEveryWrite(_ kind: StoreKind) async throws {
        let w = try await kind.seeded()
        let ticket = try await w.open()
        let queued = Counter()
        let stored = try await w.store.changeTicket(ticket.id, in: w.acme, whenQueued: { queued.tick() }, w.telling([], w.draft(.message, "a")))
        #expect(stored?.entry?.seq == 1)
        #expect(queued.value == 1)
        _ = try? await w.store.changeTicket(ticket.id, in: w.acme, whenQueued: { queued.tick() }) { _ throws(DesklineError) -> Change in throw .conflict("no") }
        #expect(queued.value == 2)
        // A pipelining caller queues its next write from `whenQueued`: they are stored in that order.
        let order = try await withThrowingTaskGroup(of: Void.self) { group -> [String] in
            for i in 0..<10 {
                let (mayGoOn, next) = AsyncStream<Void>.makeStream()
                group.addTask {
                    _ = try await w.store.changeTicket(ticket.id, in: w.acme, whenQueued: { next.yield(); next.finish() },
                                                       w.telling([], w.draft(.message, "p\(i)")))
                }
                for await _ in mayGoOn { break }
            }
            try await group.waitForAll()
            return try await w.store.entries(of: ticket.id, in: w.acme, after: EntryPosition(1), before: nil, limit: 20, includeNotes: true).map(\.text)
        }
        #expect(order == (0..<10).map { "p\($0)" })
    }
}
