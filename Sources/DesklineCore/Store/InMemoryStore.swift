import struct Foundation.Date
import Synchronization

/// A ``Store`` that keeps everything in memory, and nothing across restarts: for Core's tests,
/// for tools that need a store for a moment, and as the reference a new backend is measured
/// against (the conformance suite runs the same tests against it and the file store).
///
/// It has the file store's semantics (docs/STORAGE.md) without its files: ids and numbers are
/// handed out as there, a write runs its decision and stores its change, inbox lines and event as
/// one unit under one lock, and publishes the event once stored. So a tenant's writes are stored
/// in the order they take the lock, and its events are numbered and fed in that order.
public final class InMemoryStore: Store {
    private let state = Mutex(State())
    private let feed = EventBroadcast()

    public init() {}

    // MARK: State

    private struct State {
        var tenants: [TenantID: TenantData] = [:]
        /// Who has each login email (in any tenant), in the order they were made.
        var logins: [String: [AccountRef]] = [:]
    }

    /// A tenant's records. A write takes them out of ``State/tenants`` while it runs (so that
    /// they are changed in place, not copied) and puts them back when it ends; it throws only
    /// before it changes anything, so a refused write leaves them as they were.
    private struct TenantData {
        var tenant: Tenant
        var customers: [CustomerID: Customer] = [:]
        /// Whose each customer email is: unique within the tenant (as given, like the file
        /// store's index, which a change of the record's email does not change).
        var customerEmails: [String: CustomerID] = [:]
        var users: [UserID: User] = [:]
        /// The last customer and user numbers handed out.
        var lastCustomer = 0
        var lastUser = 0
        var tickets: [TicketID: TicketLog] = [:]
        var customerTickets: [CustomerID: [TicketID]] = [:]
        var lastTicket: TicketID?
        var calls: [CallID: CallRequest] = [:]
        var customerCalls: [CustomerID: [CallID]] = [:]
        var lastCall: CallID?
        var inboxes: [UserID: InboxLog] = [:]
        /// The event log: event `eventsBefore + n` at index `n - 1` (an imported log may begin
        /// after 1).
        var events: [TicketEvent] = []
        var eventsBefore = 0

        init(_ tenant: Tenant) { self.tenant = tenant }

        func customerLogin(_ customer: CustomerID) -> UserID? { customers[customer]?.userId }
    }

    private struct TicketLog {
        var ticket: Ticket
        var entries: [TicketEntry] = []
    }

    private struct InboxLog {
        var items: [Notification] = []
        var readUpTo = 0
        var readIds: Set<Int> = []
    }

    /// Reads the tenant's data (nil: no such tenant).
    private func read<T>(_ tenant: TenantID, _ body: (TenantData?) -> T) -> T {
        state.withLock { body($0.tenants[tenant]) }
    }

    // MARK: Accounts

    public func createTenant(_ tenant: Tenant) async throws(DesklineError) {
        try state.withLock { state throws(DesklineError) in
            guard state.tenants[tenant.id] == nil else { throw .conflict("tenant \(tenant.id) already exists") }
            var stored = tenant
            stored.createdAt = Timestamp.truncate(tenant.createdAt)
            state.tenants[tenant.id] = TenantData(stored)
        }
    }

    public func tenant(_ id: TenantID) async throws(DesklineError) -> Tenant? {
        read(id) { $0?.tenant }
    }

    public func updateTenant(_ tenant: Tenant) async throws(DesklineError) -> Tenant {
        try state.withLock { state throws(DesklineError) -> Tenant in
            guard var data = state.tenants[tenant.id] else { throw .notFound("no tenant \(tenant.id)") }
            data.tenant.name = tenant.name
            data.tenant.motd = tenant.motd
            state.tenants[tenant.id] = data
            return data.tenant
        }
    }

    public func tenants() async throws(DesklineError) -> [Tenant] {
        state.withLock { state in state.tenants.values.map(\.tenant).sorted { $0.id.rawValue < $1.id.rawValue } }
    }

    public func createCustomer(_ draft: NewCustomer, in tenant: TenantID, at time: Date) async throws(DesklineError) -> Customer {
        try state.withLock { state throws(DesklineError) -> Customer in
            guard var data = state.tenants.removeValue(forKey: tenant) else { throw .notFound("no tenant \(tenant)") }
            defer { state.tenants[tenant] = data }
            if let existing = data.customerEmails[draft.email] {
                throw .conflict("tenant \(tenant) already has a customer with email \(draft.email) (\(existing))")
            }
            data.lastCustomer += 1
            let customer = Customer(id: .numbered(data.lastCustomer), tenantId: tenant, name: draft.name, email: draft.email,
                                    phone: draft.phone, createdAt: Timestamp.truncate(time))
            data.customers[customer.id] = customer
            data.customerEmails[draft.email] = customer.id
            return customer
        }
    }

    public func customer(_ id: CustomerID, in tenant: TenantID) async throws(DesklineError) -> Customer? {
        read(tenant) { $0?.customers[id] }
    }

    public func createUser(_ draft: NewUser, in tenant: TenantID, at time: Date) async throws(DesklineError) -> User {
        try state.withLock { state throws(DesklineError) -> User in
            guard var data = state.tenants.removeValue(forKey: tenant) else { throw .notFound("no tenant \(tenant)") }
            defer { state.tenants[tenant] = data }
            var refs = state.logins[draft.email] ?? []
            if refs.contains(where: { $0.tenantId == tenant }) {
                throw .conflict("tenant \(tenant) already has a login \(draft.email)")
            }
            if let cid = draft.customerId {
                guard let customer = data.customers[cid] else { throw .notFound("no customer \(cid) in tenant \(tenant)") }
                if let existing = customer.userId {
                    throw .conflict("customer \(cid) already has a login (user \(existing))")
                }
            }
            data.lastUser += 1
            let user = User(id: .numbered(data.lastUser), tenantId: tenant, email: draft.email, displayName: draft.displayName,
                            role: draft.role, passwordHash: draft.passwordHash, customerId: draft.customerId,
                            createdAt: Timestamp.truncate(time), tenantLoginOnly: draft.tenantLoginOnly ? true : nil)
            data.users[user.id] = user
            if let cid = draft.customerId { data.customers[cid]?.userId = user.id }
            refs.append(AccountRef(tenantId: tenant, userId: user.id))
            state.logins[draft.email] = refs
            return user
        }
    }

    public func user(_ id: UserID, in tenant: TenantID) async throws(DesklineError) -> User? {
        read(tenant) { $0?.users[id] }
    }

    public func storedUser(_ id: UserID, in tenant: TenantID) async throws(DesklineError) -> User? {
        read(tenant) { $0?.users[id] }
    }

    public func accounts(withEmail email: String) async throws(DesklineError) -> [AccountRef] {
        state.withLock { $0.logins[email] ?? [] }
    }

    @discardableResult
    public func setPasswordHash(_ hash: PasswordHash, for id: UserID, in tenant: TenantID,
                                ifCurrent expected: PasswordHash?) async throws(DesklineError) -> Bool {
        try state.withLock { state throws(DesklineError) -> Bool in
            guard let user = state.tenants[tenant]?.users[id] else { throw .notFound("no user \(id) in tenant \(tenant)") }
            if let expected, user.passwordHash != expected { return false }
            state.tenants[tenant]?.users[id]?.passwordHash = hash
            return true
        }
    }

    public func updateCustomer(_ id: CustomerID, in tenant: TenantID,
                               _ change: @escaping @Sendable (inout Customer, inout User?) throws(DesklineError) -> Void) async throws(DesklineError) -> Customer {
        try state.withLock { state throws(DesklineError) -> Customer in
            guard var customer = state.tenants[tenant]?.customers[id] else { throw .notFound("no customer \(id) in tenant \(tenant)") }
            var user = customer.userId.flatMap { state.tenants[tenant]?.users[$0] }
            // On copies: a change that throws leaves both as they were.
            try change(&customer, &user)
            state.tenants[tenant]?.customers[id] = customer
            if let user { state.tenants[tenant]?.users[user.id] = user }
            return customer
        }
    }

    public func users(in tenant: TenantID) async throws(DesklineError) -> [User] {
        // In the file store's order: by id, as text.
        read(tenant) { $0.map { Array($0.users.values) } ?? [] }.sorted { $0.id.rawValue < $1.id.rawValue }
    }

    public func customers(in tenant: TenantID) async throws(DesklineError) -> [Customer] {
        read(tenant) { $0.map { Array($0.customers.values) } ?? [] }.sorted { ($0.id.number ?? 0) < ($1.id.number ?? 0) }
    }

    public func accountNumbers(in tenant: TenantID) async throws(DesklineError) -> AccountNumbers {
        guard let numbers = read(tenant, { $0.map { AccountNumbers(lastCustomer: $0.lastCustomer, lastUser: $0.lastUser) } }) else {
            throw .notFound("no tenant \(tenant)")
        }
        return numbers
    }

    public func importTenant(_ dump: TenantDump, replacing: Bool) async throws(DesklineError) {
        try dump.validate()
        let id = dump.tenant.id
        var data = TenantData(dump.tenant)
        data.lastCustomer = dump.numbers.lastCustomer
        data.lastUser = dump.numbers.lastUser
        for c in dump.customers {
            data.customers[c.id] = c
            data.customerEmails[c.email] = c.id
        }
        for u in dump.users { data.users[u.id] = u }
        for log in dump.tickets {
            data.tickets[log.ticket.id] = TicketLog(ticket: log.ticket, entries: log.entries)
            data.customerTickets[log.ticket.customerId, default: []].append(log.ticket.id)
        }
        data.lastTicket = dump.lastTicket.map(TicketID.init)
        for call in dump.calls {
            data.calls[call.id] = call
            data.customerCalls[call.customerId, default: []].append(call.id)
        }
        data.lastCall = dump.lastCall.map(CallID.init)
        for log in dump.inboxes {
            data.inboxes[log.user] = InboxLog(items: log.inbox.items, readUpTo: log.inbox.readUpTo, readIds: log.inbox.readIds)
        }
        data.events = dump.events
        data.eventsBefore = (dump.events.first?.seq ?? 1) - 1
        try state.withLock { state throws(DesklineError) in
            if state.tenants[id] != nil {
                guard replacing else { throw .conflict("tenant \(id) already exists") }
                for (email, refs) in state.logins { state.logins[email] = refs.filter { $0.tenantId != id } }
            }
            state.tenants[id] = data
            for u in dump.users { state.logins[u.email, default: []].append(AccountRef(tenantId: id, userId: u.id)) }
        }
    }

    // MARK: Tickets

    public func openTicket(in tenant: TenantID, _ decide: @escaping NewTicketDecision) async throws(DesklineError) -> Change {
        try commit(in: tenant) { data throws(DesklineError) -> Change in
            let id = TicketID.next(after: data.lastTicket)
            let change = try decide(id)
            try change.validate(.ticket(id, customer: nil), in: tenant)
            guard let ticket = change.ticket else { return change }
            data.lastTicket = id
            data.tickets[id] = TicketLog(ticket: ticket, entries: change.entry.map { [$0] } ?? [])
            data.customerTickets[ticket.customerId, default: []].append(id)
            return change
        }
    }

    public func ticket(_ id: TicketID, in tenant: TenantID) async throws(DesklineError) -> Ticket? {
        read(tenant) { $0?.tickets[id]?.ticket }
    }

    public func ticketIDs(ofCustomer customer: CustomerID, in tenant: TenantID) async throws(DesklineError) -> [TicketID] {
        read(tenant) { $0?.customerTickets[customer] ?? [] }
    }

    public func tickets(in tenant: TenantID) async throws(DesklineError) -> [Ticket] {
        read(tenant) { $0.map { $0.tickets.values.map(\.ticket) } ?? [] }.sorted { $0.id < $1.id }
    }

    public func tickets(ofCustomer customer: CustomerID, in tenant: TenantID) async throws(DesklineError) -> [Ticket] {
        read(tenant) { data in
            (data?.customerTickets[customer] ?? []).compactMap { data?.tickets[$0]?.ticket }.filter { $0.customerId == customer }
        }
    }

    public func changeTicket(_ id: TicketID, in tenant: TenantID, whenQueued: (@Sendable () -> Void)?,
                             _ decide: @escaping TicketDecision) async throws(DesklineError) -> Change? {
        // The write has its place in the order once it holds the lock; it is done when the lock
        // is released, so a caller that pipelines may go on from there.
        defer { whenQueued?() }
        return try commitIfPresent(in: tenant) { data throws(DesklineError) -> Change? in
            guard let before = data.tickets[id]?.ticket else { return nil }
            let login = data.customerLogin(before.customerId)
            let change = try decide(TicketState(ticket: before, customerLogin: { login }))
            try change.validate(.ticket(id, customer: before.customerId), in: tenant)
            guard let ticket = change.ticket else { return change }
            if ticket != before || change.entry != nil {
                data.tickets[id]?.ticket = ticket
                if let entry = change.entry { data.tickets[id]?.entries.append(entry) }
            }
            return change
        }
    }

    public func entries(of ticket: TicketID, in tenant: TenantID, after: EntryPosition?, before: EntryPosition?, limit: Int,
                        includeNotes: Bool) async throws(DesklineError) -> [TicketEntry] {
        let entries = read(tenant) { $0?.tickets[ticket]?.entries ?? [] }
        return Self.page(of: entries, after: after, before: before, limit: limit, includeNotes: includeNotes)
    }

    /// A HISTORY page, as the file store reads it from a ticket's log: entries past `after` up to
    /// `before`, the oldest `limit` of them; without `after` the newest `limit` before `before`.
    /// Notes sit after the entry they follow (`5.1` is after `5`, before `6`).
    static func page(of entries: [TicketEntry], after: EntryPosition?, before: EntryPosition?, limit: Int,
                     includeNotes: Bool) -> [TicketEntry] {
        guard limit > 0 else { return [] }
        let inRange = entries
            .drop { entry in after.map { entry.position <= $0 } ?? false }
            .prefix { entry in before.map { entry.position < $0 } ?? true }
            .filter { includeNotes || $0.isVisibleToCustomer }
        return after == nil ? Array(inRange.suffix(limit)) : Array(inRange.prefix(limit))
    }

    // MARK: Inboxes

    public func unreadNotificationCount(of user: UserID, in tenant: TenantID) async throws(DesklineError) -> Int {
        try await inbox(of: user, in: tenant).unreadCount
    }

    public func inbox(of user: UserID, in tenant: TenantID) async throws(DesklineError) -> Inbox {
        let log = read(tenant) { $0?.inboxes[user] } ?? InboxLog()
        return Inbox(items: log.items, readUpTo: log.readUpTo, readIds: log.readIds, lastId: log.items.last?.id ?? 0)
    }

    public func markNotificationsRead(_ id: Int?, of user: UserID, in tenant: TenantID) async throws(DesklineError) {
        try state.withLock { state throws(DesklineError) in
            var log = state.tenants[tenant]?.inboxes[user] ?? InboxLog()
            let lastId = log.items.last?.id ?? 0
            if let id {
                guard (1...max(1, lastId)).contains(id), id <= lastId else { throw .notFound("You have no notification \(id).") }
                if id > log.readUpTo { log.readIds.insert(id) }
                while log.readIds.remove(log.readUpTo + 1) != nil { log.readUpTo += 1 }
            } else {
                log.readUpTo = lastId
                log.readIds = []
            }
            // (Nothing is kept for a tenant that does not exist, as the file store keeps nothing
            // for a user who never got a notification.)
            state.tenants[tenant]?.inboxes[user] = log
        }
    }

    // MARK: Calls

    public func fileCall(in tenant: TenantID, _ decide: @escaping NewCallDecision) async throws(DesklineError) -> Change {
        try commit(in: tenant) { data throws(DesklineError) -> Change in
            let id = CallID.next(after: data.lastCall)
            let change = try decide(id)
            try change.validate(.call(id, customer: nil), in: tenant)
            guard let call = change.call else { return change }
            data.lastCall = id
            data.calls[id] = call
            data.customerCalls[call.customerId, default: []].append(id)
            return change
        }
    }

    public func calls(ofCustomer customer: CustomerID, in tenant: TenantID) async throws(DesklineError) -> [CallRequest] {
        read(tenant) { data in
            (data?.customerCalls[customer] ?? []).compactMap { data?.calls[$0] }.filter { $0.customerId == customer }
        }
    }

    public func calls(in tenant: TenantID) async throws(DesklineError) -> [CallRequest] {
        read(tenant) { $0.map { Array($0.calls.values) } ?? [] }.sorted { $0.id.number < $1.id.number }
    }

    public func changeCall(_ id: CallID, in tenant: TenantID, _ decide: @escaping CallDecision) async throws(DesklineError) -> Change? {
        try commitIfPresent(in: tenant) { data throws(DesklineError) -> Change? in
            guard let before = data.calls[id] else { return nil }
            let login = data.customerLogin(before.customerId)
            let ticket = before.ticketId.flatMap { data.tickets[$0]?.ticket }
            let change = try decide(CallState(call: before, customerLogin: { login }, ticket: { ticket }))
            try change.validate(.call(id, customer: before.customerId), in: tenant)
            guard let call = change.call else { return change }
            data.calls[id] = call
            return change
        }
    }

    // MARK: Events

    public func events(in tenant: TenantID, after seq: Int, limit: Int) async throws(DesklineError) -> [TicketEvent] {
        guard limit > 0 else { return [] }
        return read(tenant) { data in
            guard let events = data?.events else { return [] }
            return Array(events.dropFirst(max(0, seq - (data?.eventsBefore ?? 0))).prefix(limit))
        }
    }

    public func lastEventSeq(in tenant: TenantID) async throws(DesklineError) -> Int {
        read(tenant) { $0.map { $0.eventsBefore + $0.events.count } ?? 0 }
    }

    public func followCommittedEvents(_ sink: @escaping CommittedEventSink) -> EventSubscription {
        feed.follow(sink)
    }

    // MARK: Writes

    /// Runs a write of a tenant's tickets or calls under the lock: `body` decides and stores the
    /// entity's change, then its inbox lines and its event are stored with it, and the event is
    /// published, all before the next write. `notFound` if there is no such tenant.
    private func commit(in tenant: TenantID, _ body: (inout TenantData) throws(DesklineError) -> Change) throws(DesklineError) -> Change {
        guard let change = try commitIfPresent(in: tenant, { data throws(DesklineError) -> Change? in try body(&data) }) else {
            throw .notFound("no tenant \(tenant)")
        }
        return change
    }

    /// ``commit(in:_:)`` for a change of something that may not be there (nil: nothing stored).
    private func commitIfPresent(in tenant: TenantID, _ body: (inout TenantData) throws(DesklineError) -> Change?) throws(DesklineError) -> Change? {
        try state.withLock { state throws(DesklineError) -> Change? in
            guard var data = state.tenants.removeValue(forKey: tenant) else { return nil }
            defer { state.tenants[tenant] = data }
            guard var change = try body(&data) else { return nil }
            if let inbox = change.inbox {
                var notification = inbox.notification
                notification.at = Timestamp.truncate(notification.at)
                for user in inbox.users {
                    notification.id = (data.inboxes[user]?.items.last?.id ?? 0) + 1
                    data.inboxes[user, default: InboxLog()].items.append(notification)
                }
            }
            if var event = change.event {
                event.seq = data.eventsBefore + data.events.count + 1
                data.events.append(event)
                change.event = event
            }
            // Under the lock: each tenant's events go out in `seq` order.
            if let event = change.event { feed.publish([event]) }
            return change
        }
    }
}
