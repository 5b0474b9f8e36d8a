@testable import DesklineCore
import Foundation
import Synchronization
import Testing

struct TicketServiceTests {
    struct World {
        let store: InMemoryStore
        let tickets: TicketService
        let ann: SessionScope
        let bob: SessionScope
        let amy: SessionScope
        let gus: SessionScope
    }

    func world() async throws -> World {
        let (accounts, store) = makeAccounts()
        let acme = try await accounts.createTenant(id: "acme", name: "Acme").id
        let globex = try await accounts.createTenant(id: "globex", name: "Globex").id
        for (tenant, name, email) in [(acme, "Ann", "ann@x.test"), (acme, "Bob", "bob@x.test"), (globex, "Gus", "gus@x.test")] {
            let c = try await accounts.createCustomer(in: tenant, name: name, email: email, phone: "+1 555 0100")
            _ = try await accounts.createUser(in: tenant, email: email, displayName: nil, role: .customer, customer: c.id, password: "password1")
        }
        _ = try await accounts.createUser(in: acme, email: "amy@x.test", displayName: "Amy", role: .agent, customer: nil, password: "password1")
        func scope(_ login: String) async throws -> SessionScope { try await accounts.login(login, password: "password1") }
        return World(store: store, tickets: TicketService(store: store), ann: try await scope("ann@x.test"),
                     bob: try await scope("bob@x.test"), amy: try await scope("amy@x.test"), gus: try await scope("gus@x.test"))
    }

    /// The first `count` events `feed` delivers (within 10 s).
    static func first(_ count: Int, of feed: AsyncStream<[TicketEvent]>) async -> [TicketEvent] {
        await withTaskGroup(of: [TicketEvent].self) { group in
            group.addTask {
                var events: [TicketEvent] = []
                for await batch in feed {
                    events += batch
                    if events.count >= count { break }
                }
                return events
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(10))
                return []
            }
            let events = await group.next() ?? []
            group.cancelAll()
            return events
        }
    }

    @Test func customerMessageReopensAResolvedTicket() async throws {
        let w = try await world()
        let t = try await w.tickets.create(w.ann, subject: "Help")
        _ = try await w.store.appendEntry(nil, to: t.id, in: w.ann.tenantId, at: Date()) { $0.status = .resolved }
        let (after, entry) = try await w.tickets.post(w.ann, t.id, text: "It broke again")
        #expect(after.status == .open)
        #expect(entry.seq == 1)
        // A helpdesk reply does not reopen; it leaves the status alone.
        _ = try await w.store.appendEntry(nil, to: t.id, in: w.ann.tenantId, at: Date()) { $0.status = .resolved }
        #expect(try await w.tickets.post(w.amy, t.id, text: "Try this").0.status == .resolved)
    }

    @Test func helpdeskRepliesAreUnreadUntilTheCustomerLooks() async throws {
        let w = try await world()
        let t = try await w.tickets.create(w.ann, subject: "Help")
        _ = try await w.tickets.post(w.ann, t.id, text: "Hello")
        _ = try await w.tickets.post(w.amy, t.id, text: "Reply 1")
        _ = try await w.tickets.post(w.amy, t.id, text: "Reply 2")
        #expect(try await w.tickets.list(w.ann, status: nil).first?.customerUnread == 2)
        // Staff reading does not mark the customer's messages read.
        _ = try await w.tickets.show(w.amy, t.id)
        #expect(try await w.tickets.list(w.ann, status: nil).first?.customerUnread == 2)
        #expect(try await w.tickets.show(w.ann, t.id).0.customerUnread == 0)
        #expect(try await w.tickets.list(w.ann, status: nil).first?.customerUnread == 0)
    }

    @Test func internalNotesNeverReachTheCustomer() async throws {
        let w = try await world()
        let t = try await w.tickets.create(w.ann, subject: "Help")
        _ = try await w.tickets.post(w.ann, t.id, text: "Visible")
        let note = TicketEntryDraft(kind: .note, authorId: w.amy.userId, authorName: "Amy", authorRole: .agent, text: "customer seems upset")
        _ = try await w.store.appendEntry(note, to: t.id, in: w.ann.tenantId, at: Date()) { _ in }
        #expect(try await w.tickets.history(w.ann, t.id, before: nil, after: nil, limit: nil).map(\.text) == ["Visible"])
        #expect(try await w.tickets.show(w.ann, t.id).1.map(\.text) == ["Visible"])
        #expect(try await w.tickets.history(w.ann, t.id, before: nil, after: EntryPosition(1), limit: 5).isEmpty)
        #expect(try await w.tickets.history(w.amy, t.id, before: nil, after: nil, limit: nil).map(\.text) == ["Visible", "customer seems upset"])
    }

    @Test func otherCustomersAndTenantsGetTheSameNotFound() async throws {
        let w = try await world()
        let t = try await w.tickets.create(w.ann, subject: "Ann's")
        for scope in [w.bob, w.gus] {
            await #expect(throws: DesklineError.noSuchTicket(t.id)) { try await w.tickets.show(scope, t.id) }
            await #expect(throws: DesklineError.noSuchTicket(t.id)) { try await w.tickets.post(scope, t.id, text: "hi") }
        }
        await #expect(throws: DesklineError.noSuchTicket(TicketID(4242))) { try await w.tickets.show(w.ann, TicketID(4242)) }
        await #expect(throws: DesklineError.noSuchTicket(t.id)) { try await w.tickets.close(w.bob, t.id) }
        await #expect(throws: DesklineError.noSuchTicket(t.id)) { try await w.tickets.requestCall(w.bob, ticket: t.id, note: nil) }
        #expect(try await w.store.ticket(t.id, in: w.ann.tenantId)?.status == .open)
    }

    @Test func staffCannotUseCustomerOnlyOperations() async throws {
        let w = try await world()
        await #expect(throws: DesklineError.forbidden("only customers have their own tickets and calls")) {
            try await w.tickets.create(w.amy, subject: "x")
        }
        await #expect(throws: DesklineError.forbidden("only customers have their own tickets and calls")) {
            try await w.tickets.requestCall(w.amy, ticket: nil, note: nil)
        }
    }

    @Test func ticketNumbersArePerTenantAndConcurrentPostsGetDistinctIds() async throws {
        let w = try await world()
        #expect(try await w.tickets.create(w.ann, subject: "a").id == TicketID(1001))
        #expect(try await w.tickets.create(w.gus, subject: "g").id == TicketID(1001))
        let t = try await w.tickets.create(w.bob, subject: "b")
        let seqs = try await withThrowingTaskGroup(of: Int.self) { group in
            for i in 0..<30 { group.addTask { try await w.tickets.post(w.bob, t.id, text: "m\(i)").1.seq } }
            return try await group.reduce(into: [Int]()) { $0.append($1) }
        }
        #expect(Set(seqs) == Set(1...30))
        #expect(try await w.tickets.history(w.bob, t.id, before: nil, after: nil, limit: 100).map(\.seq) == Array(1...30))
    }

    @Test func messageTextRules() throws {
        #expect(try InputRules.messageText("  a\u{1B}[1;31mb\u{1B}[0m c\u{0}d\u{7F}e\u{1B}]8;;http://x\u{1B}\\f ") == "ab cdef")
        #expect(throws: DesklineError.invalidArgument("the message is empty")) { try InputRules.messageText("\u{1B}[2J \u{7}") }
        #expect(try InputRules.subject("a\tb") == "a b")
        // OSC ended by the C1 string terminator; bidi override and line separator removed.
        #expect(try InputRules.messageText("x\u{1B}]0;title\u{9C}VISIBLE \u{202E}evil\u{2028}line") == "xVISIBLE evilline")
        // Zero-width joiners in emoji stay.
        #expect(try InputRules.messageText("family 👨\u{200D}👩\u{200D}👧") == "family 👨\u{200D}👩\u{200D}👧")
        #expect(throws: DesklineError.self) { try InputRules.name("\u{202E}evil") }
        // Length is bounded in bytes too, not only in (possibly huge) characters.
        #expect(throws: DesklineError.self) { try InputRules.messageText("e" + String(repeating: "\u{301}", count: 20_000)) }
        // Plain ASCII (taken as it is) keeps its tabs and counts a character per byte; text
        // with anything else counts characters.
        #expect(try InputRules.messageText(" a\tb ") == "a\tb")
        let most = InputRules.maximumMessageLength
        #expect(try InputRules.messageText(String(repeating: "x", count: most)).utf8.count == most)
        #expect(throws: DesklineError.invalidArgument("the message is longer than \(most) characters")) {
            try InputRules.messageText(String(repeating: "x", count: most + 1))
        }
        #expect(try InputRules.messageText(String(repeating: "é", count: most)).count == most)
        #expect(throws: DesklineError.self) { try InputRules.messageText(String(repeating: "é", count: most) + "x") }
    }

    /// Trimming: text that starts and ends with printable ASCII is returned as it is; anything
    /// else is trimmed of Unicode whitespace at both ends, a character at a time.
    @Test func trimmingWhitespaceLooksAtBothEnds() {
        #expect("a b".trimmingWhitespace() == "a b")
        #expect("a\u{301} x\u{0600}b".trimmingWhitespace() == "a\u{301} x\u{0600}b")
        #expect(" a\t".trimmingWhitespace() == "a")
        #expect("\u{3000}a b\u{A0}".trimmingWhitespace() == "a b")
        #expect("\r\na\r\n".trimmingWhitespace() == "a")
        #expect("é ".trimmingWhitespace() == "é")
        #expect(" \u{2003} ".trimmingWhitespace() == "")
        #expect("".trimmingWhitespace() == "")
        #expect("~".trimmingWhitespace() == "~")
        // Printable ASCII at one end only: the other end is still trimmed.
        #expect("a ".trimmingWhitespace() == "a")
        #expect(" a".trimmingWhitespace() == "a")
        #expect("a\n".trimmingWhitespace() == "a")
        #expect("\u{3000}a".trimmingWhitespace() == "a")
    }

    @Test func ticketNumbersAreAsciiDigitsWithAnOptionalHash() {
        #expect(TicketID(parsing: "#1001") == TicketID(1001))
        #expect(TicketID(parsing: "1001") == TicketID(1001))
        #expect(TicketID(parsing: "#999999999") == TicketID(999_999_999))
        for bad in ["", "#", "#0", "#000", "##1", "#1234567890", "#12a", "#+5", "#-5", " #5", "#5 ", "#\u{663}", "#\u{FF15}", "#\u{301}5", "5\u{301}"] {
            #expect(TicketID(parsing: bad) == nil, "\(bad.debugDescription)")
        }
    }

    @Test func phoneNumbersNeedSevenToFifteenDigits() throws {
        for bad in ["999", "112", "+1 (555)", "call me", String(repeating: "1", count: 16)] {
            #expect(throws: DesklineError.self) { try InputRules.phone(bad) }
        }
        #expect(try InputRules.phone(" +1 (555) 010-0199 ") == "+1 (555) 010-0199")
    }
}

/// Events are facts a store can keep (issue #17): every kind survives a JSON round trip whole.
struct TicketEventCodingTests {
    @Test func everyKindOfEventSurvivesAJSONRoundTrip() async throws {
        let (accounts, store) = makeAccounts()
        let acme = try await accounts.createTenant(id: "acme", name: "Acme").id
        let c = try await accounts.createCustomer(in: acme, name: "Ann", email: "ann@x.test", phone: "+1 555 0100")
        _ = try await accounts.createUser(in: acme, email: "ann@x.test", displayName: nil, role: .customer, customer: c.id, password: "password1")
        _ = try await accounts.createUser(in: acme, email: "amy@x.test", displayName: "Amy", role: .agent, customer: nil, password: "password1")
        let ann = try await accounts.login("ann@x.test", password: "password1")
        let tickets = TicketService(store: store)
        let feed = store.committedEvents()
        let ticket = try await tickets.create(ann, subject: "Printer on fire")
        _ = try await tickets.post(ann, ticket.id, text: "Please hurry")
        _ = try await tickets.requestCall(ann, ticket: ticket.id, note: "after 5pm")
        let events = await TicketServiceTests.first(3, of: feed)
        #expect(Set(events.map(\.kind)) == [.created, .entry, .call])
        for event in events {
            let decoded = try JSONDecoder().decode(TicketEvent.self, from: try JSONEncoder().encode(event))
            #expect(decoded == event)
        }
    }
}
