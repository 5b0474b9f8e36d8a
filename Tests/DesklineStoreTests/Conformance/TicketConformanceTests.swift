import DesklineCore
import Foundation
import Testing

/// Tickets, their entries and HISTORY pages: the same behaviour from every backend.
struct TicketConformanceTests {
    @Test(arguments: StoreKind.allCases)
    func ticketsAreNumberedFrom1001PerTenantWithoutGaps(_ kind: StoreKind) async throws {
        let w = try await kind.seeded()
        #expect(try await w.open().id == TicketID(1001))
        #expect(try await w.open().id == TicketID(1002))
        #expect(try await w.open(customer: .numbered(1), in: w.globex).id == TicketID(1001))
        // A refused open and an open whose change is about another ticket take no number.
        await #expect(throws: DesklineError.conflict("no")) {
            try await w.store.openTicket(in: w.acme) { _ throws(DesklineError) -> Change in throw .conflict("no") }
        }
        await #expect(throws: DesklineError.self) {
            try await w.store.openTicket(in: w.acme) { id in
                Change(ticket: .opened(TicketID(id.number + 5), in: w.acme, by: w.annC, subject: "x", at: w.now))
            }
        }
        #expect(try await w.open().id == TicketID(1003))
        #expect(try await w.store.tickets(in: w.acme).map(\.id) == [1001, 1002, 1003].map(TicketID.init))
        await #expect(throws: DesklineError.self) { try await w.open(in: TenantID(rawValue: "initech")!) }
    }

    @Test(arguments: StoreKind.allCases)
    func ticketsAreKeptApartPerTenantAndPerCustomer(_ kind: StoreKind) async throws {
        let w = try await kind.seeded()
        let a1 = try await w.open("a1")
        let b1 = try await w.open("b1", customer: w.bobC)
        let a2 = try await w.open("a2")
        let g1 = try await w.open("g1", customer: .numbered(1), in: w.globex)
        #expect(try await w.store.ticketIDs(ofCustomer: w.annC, in: w.acme) == [a1.id, a2.id])
        #expect(try await w.store.ticketIDs(ofCustomer: w.bobC, in: w.acme) == [b1.id])
        #expect(try await w.store.tickets(ofCustomer: w.annC, in: w.acme) == [a1, a2])
        #expect(try await w.store.tickets(ofCustomer: .numbered(1), in: w.globex) == [g1])
        #expect(try await w.store.tickets(ofCustomer: .numbered(7), in: w.acme) == [])
        #expect(try await w.store.tickets(in: w.acme) == [a1, b1, a2])
        #expect(try await w.store.tickets(in: w.globex) == [g1])
        #expect(try await w.store.ticket(a1.id, in: w.acme) == a1)
        #expect(try await w.store.ticket(b1.id, in: w.globex) == nil)
        #expect(try await w.store.ticket(TicketID(4242), in: w.acme) == nil)
        #expect(a1.status == .open && a1.subject == "a1" && a1.customerId == w.annC && a1.tenantId == w.acme)
    }

    @Test(arguments: StoreKind.allCases)
    func aChangeStoresItsTicketEntryInboxLinesAndEventTogether(_ kind: StoreKind) async throws {
        let w = try await kind.seeded()
        let ticket = try await w.open()
        let change = try #require(try await w.store.changeTicket(ticket.id, in: w.acme, w.telling([w.amy, w.bob], w.draft(.message, "Help"))))
        let stored = try #require(try await w.store.ticket(ticket.id, in: w.acme))
        #expect(change.ticket == stored)
        #expect(stored.lastSeq == 1)
        #expect(try await w.store.entries(of: ticket.id, in: w.acme, after: nil, before: nil, limit: 10, includeNotes: true) == [try #require(change.entry)])
        for user in [w.amy, w.bob] {
            let inbox = try await w.store.inbox(of: user, in: w.acme)
            #expect(inbox.items.map(\.id) == [1])
            #expect(inbox.items.map(\.text) == ["Help"])
            #expect(inbox.items.map(\.ticket) == [ticket.id])
        }
        #expect(try await w.store.inbox(of: w.ann, in: w.acme).items.isEmpty)
        // The event is numbered after the ticket's `created` event and logged as returned.
        #expect(change.event?.seq == 2)
        #expect(try await w.store.events(in: w.acme, after: 1, limit: 10) == [try #require(change.event)])
    }

    @Test(arguments: StoreKind.allCases)
    func aRefusedDecisionStoresNothingAndTakesNoEventNumber(_ kind: StoreKind) async throws {
        let w = try await kind.seeded()
        let ticket = try await w.open()
        let told = w.telling([w.amy], w.draft(.message, "Refused"))
        await #expect(throws: DesklineError.ticketClosed(ticket.id)) {
            try await w.store.changeTicket(ticket.id, in: w.acme) { state throws(DesklineError) -> Change in
                _ = try told(state)
                throw .ticketClosed(ticket.id)
            }
        }
        #expect(try await w.store.ticket(ticket.id, in: w.acme) == ticket)
        #expect(try await w.store.entries(of: ticket.id, in: w.acme, after: nil, before: nil, limit: 10, includeNotes: true) == [])
        #expect(try await w.store.inbox(of: w.amy, in: w.acme).items == [])
        #expect(try await w.store.lastEventSeq(in: w.acme) == 1)
        let next = try await w.store.changeTicket(ticket.id, in: w.acme, w.telling([w.amy], w.draft(.message, "Kept")))
        #expect(next?.event?.seq == 2)
        #expect(next?.entry?.seq == 1)
        #expect(try await w.store.inbox(of: w.amy, in: w.acme).items.map(\.id) == [1])
    }

    @Test(arguments: StoreKind.allCases)
    func aChangeAboutAnotherTicketOrCustomerIsRefused(_ kind: StoreKind) async throws {
        let w = try await kind.seeded()
        let ticket = try await w.open()
        let other = try await w.open("other")
        let wrongs: [@Sendable (Ticket) -> Change] = [
            { _ in Change(ticket: other) },
            { ticket in var t = ticket; t.customerId = w.bobC; return Change(ticket: t) },
            { ticket in var t = ticket; t.tenantId = w.globex; return Change(ticket: t) },
            { _ in Change() },
            { ticket in Change(ticket: ticket, call: .filed(CallID(1), in: w.acme, by: w.annC, about: nil, phone: "1", note: nil, at: w.now)) },
        ]
        for wrong in wrongs {
            let change = wrong
            await #expect(throws: DesklineError.self) {
                try await w.store.changeTicket(ticket.id, in: w.acme) { state in
                    var made = change(state.ticket)
                    made.event = TicketEvent(kind: .entry, tenantId: w.acme, ticket: state.ticket, actor: Actor(id: w.amy, name: "amy", role: .agent), at: w.now)
                    return made
                }
            }
        }
        #expect(try await w.store.tickets(in: w.acme) == [ticket, other])
        #expect(try await w.store.lastEventSeq(in: w.acme) == 2)
    }

    @Test(arguments: StoreKind.allCases)
    func aMissingTicketIsNilAndItsDecisionNeverRuns(_ kind: StoreKind) async throws {
        let w = try await kind.seeded()
        let ran = Counter()
        let change = try await w.store.changeTicket(TicketID(1001), in: w.acme) { state in
            ran.tick()
            return Change(ticket: state.ticket)
        }
        #expect(change == nil)
        #expect(ran.value == 0)
        #expect(try await w.store.entries(of: TicketID(1001), in: w.acme, after: nil, before: nil, limit: 10, includeNotes: true) == [])
    }

    @Test(arguments: StoreKind.allCases)
    func theDecisionSeesTheCurrentTicketAndTheCustomersLogin(_ kind: StoreKind) async throws {
        let w = try await kind.seeded()
        let ticket = try await w.open()
        let carl = try await w.store.createCustomer(NewCustomer(name: "Carl", email: "carl@x.test", phone: nil), in: w.acme, at: w.now)
        let carls = try await w.open(customer: carl.id)
        for (id, login) in [(ticket.id, Optional(w.ann)), (carls.id, nil)] {
            let change = try await w.store.changeTicket(id, in: w.acme) { state throws(DesklineError) -> Change in
                var ticket = state.ticket
                ticket.assigneeId = try state.customerLogin() ?? w.amy
                return Change(ticket: ticket)
            }
            #expect(change?.ticket?.assigneeId == login ?? w.amy)
        }
        // An assignment (no entry) is stored and seen by the next decision.
        let seen = try await w.store.changeTicket(ticket.id, in: w.acme) { state in Change(ticket: state.ticket) }
        #expect(seen?.ticket?.assigneeId == w.ann)
        #expect(try await w.store.ticket(ticket.id, in: w.acme)?.assigneeId == w.ann)
        // A change that changes nothing and tells nothing takes no event number.
        #expect(seen?.event == nil)
        #expect(try await w.store.lastEventSeq(in: w.acme) == 2)
    }

    @Test(arguments: StoreKind.allCases)
    func notesAreNumberedApartFromWhatCustomersSee(_ kind: StoreKind) async throws {
        let w = try await kind.seeded()
        let ticket = try await w.open()
        let positions = try await [w.draft(.message, "m1"), w.draft(.note, "n1"), w.draft(.note, "n2"), w.draft(.message, "m2", by: w.amy),
                                   w.draft(.status, "status changed to pending", by: w.amy), w.draft(.note, "n3")]
            .asyncMap { try await w.append($0, to: ticket.id).messageID }
        #expect(positions == ["1", "1.1", "1.2", "2", "3", "3.3"])
        let stored = try #require(try await w.store.ticket(ticket.id, in: w.acme))
        #expect(stored.lastSeq == 3)
        #expect(stored.noteCount == 3)
        // Every change took an event number: notes too, in the tenant's one sequence.
        #expect(try await w.store.events(in: w.acme, after: 0, limit: 10).map(\.seq) == Array(1...7))
    }

    @Test(arguments: StoreKind.allCases)
    func historyPagesAreTheSameFromEveryStore(_ kind: StoreKind) async throws {
        let w = try await kind.seeded()
        let ticket = try await w.open()
        // 1, 1.1, 2, 3, 3.2, 3.3, 4, 5, 5.4: messages, status changes, notes, and an assignment.
        let kinds: [TicketEntry.Kind] = [.message, .note, .message, .status, .note, .note, .message, .message, .note]
        var all: [TicketEntry] = []
        for (i, kind) in kinds.enumerated() {
            all.append(try await w.append(w.draft(kind, "e\(i)", by: kind == .message && i % 2 == 0 ? w.ann : w.amy), to: ticket.id))
            if i == 4 { _ = try await w.store.changeTicket(ticket.id, in: w.acme) { s in var t = s.ticket; t.assigneeId = w.amy; return Change(ticket: t) } }
        }
        #expect(all.map(\.messageID) == ["1", "1.1", "2", "3", "3.2", "3.3", "4", "5", "5.4"])
        func page(after: String?, before: String?, limit: Int, notes: Bool) async throws -> [String] {
            try await w.store.entries(of: ticket.id, in: w.acme, after: after.flatMap(EntryPosition.init(parsing:)),
                                      before: before.flatMap(EntryPosition.init(parsing:)), limit: limit, includeNotes: notes).map(\.messageID)
        }
        // The newest page, with and without notes.
        #expect(try await page(after: nil, before: nil, limit: 3, notes: true) == ["4", "5", "5.4"])
        #expect(try await page(after: nil, before: nil, limit: 3, notes: false) == ["3", "4", "5"])
        // Before an entry: the newest before it; a note sits after its entry and before the next.
        #expect(try await page(after: nil, before: "3", limit: 10, notes: true) == ["1", "1.1", "2"])
        #expect(try await page(after: nil, before: "3.3", limit: 2, notes: true) == ["3", "3.2"])
        #expect(try await page(after: nil, before: "1", limit: 10, notes: true) == [])
        // After an entry: the oldest after it; "after 1" includes note 1.1.
        #expect(try await page(after: "1", before: nil, limit: 2, notes: true) == ["1.1", "2"])
        #expect(try await page(after: "1", before: nil, limit: 2, notes: false) == ["2", "3"])
        #expect(try await page(after: "3.2", before: nil, limit: 2, notes: true) == ["3.3", "4"])
        #expect(try await page(after: "2", before: "4", limit: 10, notes: true) == ["3", "3.2", "3.3"])
        #expect(try await page(after: "2", before: "4", limit: 10, notes: false) == ["3"])
        #expect(try await page(after: "5.4", before: nil, limit: 10, notes: true) == [])
        #expect(try await page(after: nil, before: nil, limit: 0, notes: true) == [])
        // Every window agrees with a scan of all entries.
        let positions = [nil] + all.map(\.position) + [EntryPosition(0), EntryPosition(9)]
        for after in positions {
            for before in positions {
                for limit in [1, 2, 4, 20] {
                    for notes in [true, false] {
                        let chosen = all.filter { entry in
                            (notes || entry.isVisibleToCustomer) && after.map { entry.position > $0 } ?? true && before.map { entry.position < $0 } ?? true
                        }
                        let expected = after == nil ? Array(chosen.suffix(limit)) : Array(chosen.prefix(limit))
                        let got = try await w.store.entries(of: ticket.id, in: w.acme, after: after, before: before, limit: limit, includeNotes: notes)
                        #expect(got == expected, "after \(String(describing: after)) before \(String(describing: before)) limit \(limit) notes \(notes)")
                    }
                }
            }
        }
    }

    @Test(arguments: StoreKind.allCases)
    func concurrentWritersOfOneTicketAreEachNumberedOnce(_ kind: StoreKind) async throws {
        let w = try await kind.seeded()
        let ticket = try await w.open()
        let seqs = try await withThrowingTaskGroup(of: Int.self) { group in
            for i in 0..<40 { group.addTask { try await w.append(w.draft(.message, "m\(i)"), to: ticket.id).seq } }
            return try await group.reduce(into: [Int]()) { $0.append($1) }
        }
        #expect(Set(seqs) == Set(1...40))
        #expect(seqs.count == 40)
        #expect(try await w.store.entries(of: ticket.id, in: w.acme, after: nil, before: nil, limit: 100, includeNotes: true).map(\.seq) == Array(1...40))
        #expect(try await w.store.ticket(ticket.id, in: w.acme)?.lastSeq == 40)
        let events = try await w.store.events(in: w.acme, after: 0, limit: 100)
        #expect(events.map(\.seq) == Array(1...41))
        // The log's order is the commit order: each entry's event after the one before it.
        #expect(events.dropFirst().compactMap(\.entry?.seq) == Array(1...40))
    }
}
