import Foundation

/// A whole tenant as a store holds it: what `deskline export` writes and `deskline import` loads
/// into either backend (docs/STORAGE.md, "Moving data"). Every record keeps its id and number,
/// so a tenant moved between stores answers every request as before.
public struct TenantDump: Sendable, Equatable {
    /// A ticket's current state and its whole conversation (notes included), oldest first.
    public struct TicketLog: Sendable, Equatable {
        public var ticket: Ticket
        public var entries: [TicketEntry]

        public init(ticket: Ticket, entries: [TicketEntry]) {
            self.ticket = ticket
            self.entries = entries
        }
    }

    /// A user's inbox: every notification and what is read.
    public struct InboxLog: Sendable, Equatable {
        public var user: UserID
        public var inbox: Inbox

        public init(user: UserID, inbox: Inbox) {
            self.user = user
            self.inbox = inbox
        }
    }

    public var tenant: Tenant
    /// The last customer and user numbers handed out (a refused create may have spent one that
    /// no record has: it is never handed out again).
    public var numbers: AccountNumbers
    public var customers: [Customer]
    public var users: [User]
    public var tickets: [TicketLog]
    public var calls: [CallRequest]
    /// Inboxes that ever got a notification.
    public var inboxes: [InboxLog]
    /// The event log as the store keeps it (its retained tail), in order.
    public var events: [TicketEvent]

    public init(tenant: Tenant, numbers: AccountNumbers, customers: [Customer] = [], users: [User] = [],
                tickets: [TicketLog] = [], calls: [CallRequest] = [], inboxes: [InboxLog] = [], events: [TicketEvent] = []) {
        self.tenant = tenant
        self.numbers = numbers
        self.customers = customers
        self.users = users
        self.tickets = tickets
        self.calls = calls
        self.inboxes = inboxes
        self.events = events
    }

    /// The last ticket and call numbers handed out (nil: none yet), and the last event's.
    public var lastTicket: Int? { tickets.map(\.ticket.id.number).max() }
    public var lastCall: Int? { calls.map(\.id.number).max() }
    public var lastEvent: Int { events.last?.seq ?? 0 }
}

/// The last customer and user numbers a tenant handed out.
public struct AccountNumbers: Sendable, Codable, Equatable {
    public var lastCustomer: Int
    public var lastUser: Int

    public init(lastCustomer: Int, lastUser: Int) {
        self.lastCustomer = lastCustomer
        self.lastUser = lastUser
    }
}

extension TenantDump {
    /// Reads a whole tenant through the store port (nil: no such tenant). The store should not
    /// be written meanwhile (a running server's writes may or may not be in it).
    public static func read(_ id: TenantID, from store: any Store) async throws(DesklineError) -> TenantDump? {
        guard let tenant = try await store.tenant(id) else { return nil }
        var dump = TenantDump(tenant: tenant, numbers: try await store.accountNumbers(in: id))
        dump.customers = try await store.customers(in: id)
        dump.customers.sort { ($0.id.number ?? 0, $0.id.rawValue) < ($1.id.number ?? 0, $1.id.rawValue) }
        dump.users = try await store.users(in: id).sorted { ($0.id.number ?? 0, $0.id.rawValue) < ($1.id.number ?? 0, $1.id.rawValue) }
        for ticket in try await store.tickets(in: id).sorted(by: { $0.id.number < $1.id.number }) {
            var entries: [TicketEntry] = []
            while true {
                let page = try await store.entries(of: ticket.id, in: id, after: entries.last?.position ?? EntryPosition(0),
                                                   before: nil, limit: 1000, includeNotes: true)
                entries += page
                if page.count < 1000 { break }
            }
            dump.tickets.append(TicketLog(ticket: ticket, entries: entries))
        }
        dump.calls = try await store.calls(in: id).sorted { $0.id.number < $1.id.number }
        for user in dump.users {
            let inbox = try await store.inbox(of: user.id, in: id)
            if inbox.lastId > 0 { dump.inboxes.append(InboxLog(user: user.id, inbox: inbox)) }
        }
        while true {
            let page = try await store.events(in: id, after: dump.events.last?.seq ?? 0, limit: 1000)
            dump.events += page
            if page.count < 1000 { break }
        }
        return dump
    }

    /// Checks that the dump is whole and consistent before a store loads it: every record is
    /// the tenant's, ids are unique, references point at records in the dump, entries and
    /// inbox ids are in order, events are numbered without gaps. A store loads only a dump that
    /// passed (so an import never leaves half a tenant because of the dump).
    public func validate() throws(DesklineError) {
        func fail(_ what: String) -> DesklineError { .invalidArgument("the dump of \(tenant.id) is not consistent: \(what)") }
        let id = tenant.id
        var customerIds = Set<CustomerID>(), userIds = Set<UserID>(), emails = Set<String>(), customerEmails = Set<String>()
        for c in customers {
            guard c.tenantId == id else { throw fail("customer \(c.id) belongs to \(c.tenantId)") }
            guard customerIds.insert(c.id).inserted else { throw fail("customer \(c.id) twice") }
            guard customerEmails.insert(c.email).inserted else { throw fail("customer email \(c.email) twice") }
            guard (c.id.number ?? .max) <= numbers.lastCustomer else { throw fail("customer \(c.id) is beyond the last number \(numbers.lastCustomer)") }
        }
        for u in users {
            guard u.tenantId == id else { throw fail("user \(u.id) belongs to \(u.tenantId)") }
            guard userIds.insert(u.id).inserted else { throw fail("user \(u.id) twice") }
            guard emails.insert(u.email).inserted else { throw fail("login email \(u.email) twice") }
            guard (u.id.number ?? .max) <= numbers.lastUser else { throw fail("user \(u.id) is beyond the last number \(numbers.lastUser)") }
            if let c = u.customerId {
                guard customers.contains(where: { $0.id == c && $0.userId == u.id }) else { throw fail("user \(u.id)'s customer \(c) does not link back") }
            }
        }
        for c in customers {
            if let u = c.userId, !users.contains(where: { $0.id == u && $0.customerId == c.id }) {
                throw fail("customer \(c.id)'s login \(u) does not link back")
            }
        }
        var ticketIds = Set<TicketID>()
        for log in tickets {
            let t = log.ticket
            guard t.tenantId == id, customerIds.contains(t.customerId) else { throw fail("ticket \(t.id) is not of a customer of \(id)") }
            guard ticketIds.insert(t.id).inserted, t.id.number > 1000 else { throw fail("ticket \(t.id) twice or below 1001") }
            var last = EntryPosition(0)
            for e in log.entries {
                guard last < e.position else { throw fail("ticket \(t.id)'s entries are out of order at \(e.messageID)") }
                last = e.position
            }
            guard (log.entries.filter { $0.note == nil }.map(\.seq).max() ?? 0) <= t.lastSeq else { throw fail("ticket \(t.id) has entries beyond its count") }
        }
        var callIds = Set<CallID>()
        for c in calls {
            guard c.tenantId == id, customerIds.contains(c.customerId) else { throw fail("call \(c.id) is not of a customer of \(id)") }
            guard callIds.insert(c.id).inserted else { throw fail("call \(c.id) twice") }
        }
        var inboxUsers = Set<UserID>()
        for log in inboxes {
            guard userIds.contains(log.user), inboxUsers.insert(log.user).inserted else { throw fail("inbox of \(log.user) is not of one user") }
            let ids = log.inbox.items.map(\.id)
            guard zip(ids, ids.dropFirst()).allSatisfy({ $0 < $1 }), (ids.first ?? 1) >= 1, (ids.last ?? 0) <= log.inbox.lastId,
                  log.inbox.readUpTo <= log.inbox.lastId else { throw fail("inbox of \(log.user) is not numbered in order") }
        }
        for (i, event) in events.enumerated() {
            guard event.tenantId == id, let seq = event.seq, seq == (events.first?.seq ?? 1) + i else { throw fail("the event log is not numbered without gaps") }
        }
    }
}
